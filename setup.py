"""Build hook: record the git commit of the checkout a wheel is built from in ``tvlars/_build_info.json``, so an
installed copy (a wheel, ``pip install git+...``, a Docker image) knows which code it is. Everything else about the
package is declared in ``pyproject.toml``."""

import json
import subprocess
from pathlib import Path

from setuptools import setup
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


setup(cmdclass={"build_py": BuildPyWithCommit})
