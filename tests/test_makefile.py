"""The Makefile's environment and data steps, read from `make -n` (prints the commands, runs nothing)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def make_n(*args: str, **env: str) -> list[str]:
    """The commands ``make -n -B ARGS`` would run on a fresh machine (``-B``: as if nothing were installed yet), with
    only ``env`` among the variables the Makefile reads."""
    clean = {k: v for k, v in os.environ.items()
             if k not in {"VIRTUAL_ENV", "CONDA_PREFIX", "TVLARS_DATA", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    result = subprocess.run(["make", "-n", "-B", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
                            check=True)
    return result.stdout.splitlines()


@pytest.mark.parametrize(("env", "python"), [
    ({}, ".venv/bin/python"),
    ({"VIRTUAL_ENV": "/envs/venv"}, "/envs/venv/bin/python"),
    ({"CONDA_PREFIX": "/opt/conda/envs/x"}, "/opt/conda/envs/x/bin/python"),
    ({"VIRTUAL_ENV": "/envs/venv", "CONDA_PREFIX": "/opt/conda"}, "/envs/venv/bin/python"),  # the innermost one
])
def test_the_active_environment_is_used(env: dict[str, str], python: str) -> None:
    commands = make_n("test", **env)
    assert f"{python} -m pytest -q" in commands
    assert f"{python} scripts/get_data.py fashion_mnist --root data" in commands  # data before the tests
    assert commands.index(f"{python} scripts/get_data.py fashion_mnist --root data") < commands.index(
        f"{python} -m pytest -q")
    creates_venv = any("-m venv .venv" in line for line in commands)
    assert creates_venv == (not env)  # a new .venv only without an active environment


def test_data_root_and_the_table_data_step() -> None:
    assert ".venv/bin/python scripts/get_data.py cifar10 --root /d" in make_n("data", "DATASETS=cifar10",
                                                                              TVLARS_DATA="/d")
    commands = make_n("reproduce-table", "TABLE=cifar10-mini", "PROFILE=full")
    assert ".venv/bin/python scripts/get_data.py --table cifar10-mini --profile full --root data" in commands
