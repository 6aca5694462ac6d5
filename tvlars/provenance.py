"""Where a run came from: the code (a content hash of the package, git commit and uncommitted changes), the
machine and the library versions. Written into every ``summary.json``; the code hash lets a rerun notice that a
finished or resumed run was produced by different code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import torchvision

from tvlars import __version__
from tvlars.git import git
from tvlars.paths import CONFIG_DIR, EXPERIMENTS_DIR, PACKAGE_DIR

_SOURCE_SUFFIXES = (".py", ".yaml")


def _sources() -> dict[PurePosixPath, Path]:
    """Every ``.py`` and ``.yaml`` file of the package and of the trees it ships (``configs/``, ``experiments/``), by
    its name inside an installed package: the same names in a checkout and a wheel."""
    trees = [(PurePosixPath(), PACKAGE_DIR), *((PurePosixPath(tree.name), tree) for tree in (Path(CONFIG_DIR),
                                                                                             EXPERIMENTS_DIR))]
    return {name / path.relative_to(tree).as_posix(): path for name, tree in trees for path in tree.rglob("*")
            if path.suffix in _SOURCE_SUFFIXES and path.is_file()}


@functools.cache
def code_hash() -> str:
    """SHA-256 (first 16 hex digits) of the package's code, configs and specs (:func:`_sources`).

    Independent of git, so it identifies the code of a checkout, a wheel or a Docker image alike.
    """
    digest = hashlib.sha256()
    for name, path in sorted(_sources().items()):
        digest.update(str(name).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _git(*args: str) -> str | None:
    """``git <args>`` in the package's directory (:func:`tvlars.git.git`)."""
    return git(*args, cwd=PACKAGE_DIR)


def _build_info() -> dict[str, Any]:
    """What ``setup.py`` recorded when this installed copy was built (``{}`` if nothing was)."""
    try:
        info = json.loads((PACKAGE_DIR / "_build_info.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: info.get(k) for k in ("git_commit", "git_dirty")} if isinstance(info, dict) else {}


@functools.cache
def git_state() -> dict[str, Any]:
    """``git_commit``, ``git_dirty`` and ``git_diff_hash`` of the checkout this package runs from.

    For an installed copy that is not the ``tvlars/`` directory of a git work tree (a wheel inside a virtual
    environment that happens to sit in some repository is not mistaken for that repository's code), the commit
    recorded when the wheel was built (see ``setup.py``), else ``None``.
    ``git_diff_hash`` hashes the uncommitted changes (tracked diff plus untracked files) of the whole work tree.
    """
    none = {"git_commit": None, "git_dirty": None, "git_diff_hash": None}
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() / "tvlars" != PACKAGE_DIR:
        return {**none, **_build_info()}
    commit, diff = _git("rev-parse", "HEAD"), _git("diff", "HEAD", "--binary")
    status = _git("status", "--porcelain", "--untracked-files=all")
    if commit is None or status is None or diff is None:
        return none
    digest = hashlib.sha256(diff.encode())
    untracked = sorted(line[3:] for line in status.splitlines() if line.startswith("?? "))
    root = Path(top.strip())
    for name in untracked:
        path = root / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b""))
    dirty = bool(status.strip())
    return {"git_commit": commit.strip(), "git_dirty": dirty,
            "git_diff_hash": digest.hexdigest()[:16] if dirty else None}


def environment(device: torch.device, world_size: int) -> dict[str, Any]:
    """Code, machine and versions of a run (the ``summary.json`` fields besides results)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"code_hash": code_hash(), **git_state(), "device": str(device), "device_name": name,
            "world_size": world_size, "hostname": platform.node(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "tvlars": __version__}}
