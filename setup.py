"""What ``pyproject.toml`` cannot declare: the packages, which include the config tree and the experiment specs of the
repository's top level as ``tvlars.configs`` and ``tvlars.experiments`` (tvlars.paths finds them in either place),
and a build hook that records the git commit of the checkout a wheel is built from in ``tvlars/_build_info.json``, so
an installed copy (a wheel, ``pip install git+...``, a Docker image) knows which code it is."""

import json
import subprocess
from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


class BuildPyWithCommit(build_py):
    def run(self) -> None:
        super().run()
        commit = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=no")
        info = {"git_commit": commit, "git_dirty": None if status is None else bool(status)}
        target = Path(self.build_lib) / "tvlars" / "_build_info.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(info) + "\n")


TREES = ("configs", "experiments")  # top-level directories shipped inside the package, with their YAML files

setup(packages=[*find_namespace_packages(include=["tvlars", "tvlars.*"]),
                *(f"tvlars.{name}" for name in find_namespace_packages(include=[*TREES, *(f"{t}.*" for t in TREES)]))],
      package_dir={f"tvlars.{tree}": tree for tree in TREES},
      package_data={f"tvlars.{tree}": ["*.yaml", "*/*.yaml"] for tree in TREES},
      cmdclass={"build_py": BuildPyWithCommit})
