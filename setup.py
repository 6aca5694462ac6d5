"""What ``pyproject.toml`` cannot declare: the packages, which include the config tree and the experiment specs of the
repository's top level as ``tvlars.configs`` and ``tvlars.experiments`` (tvlars.paths finds them in either place),
and a build hook that records the git commit of the checkout a wheel is built from in ``tvlars/_build_info.json``, so
an installed copy (a wheel, ``pip install git+...``, a Docker image) knows which code it is."""

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _git_module() -> ModuleType:
    """``tvlars/git.py`` loaded by its path: the build environment cannot import the package."""
    spec = importlib.util.spec_from_file_location("tvlars_git", ROOT / "tvlars" / "git.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithCommit(build_py):
    def run(self) -> None:
        super().run()
        git = _git_module().git
        commit = git("rev-parse", "HEAD", cwd=ROOT)
        status = git("status", "--porcelain", "--untracked-files=no", cwd=ROOT)
        info = {"git_commit": commit and commit.strip(), "git_dirty": None if status is None else bool(status.strip())}
        target = Path(self.build_lib) / "tvlars" / "_build_info.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(info) + "\n")


TREES = ("configs", "experiments")  # top-level directories shipped inside the package, with their YAML files

setup(packages=[*find_namespace_packages(include=["tvlars", "tvlars.*"]),
                *(f"tvlars.{name}" for name in find_namespace_packages(include=[*TREES, *(f"{t}.*" for t in TREES)]))],
      package_dir={f"tvlars.{tree}": tree for tree in TREES},
      package_data={f"tvlars.{tree}": ["*.yaml", "*/*.yaml"] for tree in TREES},
      cmdclass={"build_py": BuildPyWithCommit})
