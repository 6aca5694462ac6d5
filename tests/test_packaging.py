"""tvlars installs anywhere: a wheel built from this checkout, installed outside the repository, composes configs
and runs a smoke table from another working directory, and records the commit it was built from."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, cli_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout built as a wheel (no build isolation: the build tools of this environment) and installed
    without dependencies into a scratch directory; returns that directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist")], check=True, capture_output=True, timeout=600)
    [wheel] = (tmp / "dist").glob("tvlars-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tvlars/configs/config.yaml" in names and "tvlars/experiments/fmnist-mini.yaml" in names
    info = json.loads(zipfile.ZipFile(wheel).read("tvlars/_build_info.json"))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert info["git_commit"] == head
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    return tmp / "site"


def _run(site: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, env={**cli_env(), "PYTHONPATH": str(site)},
                          capture_output=True, text=True, timeout=timeout)


def test_installed_wheel_composes_a_config_from_another_directory(installed: Path, tmp_path: Path) -> None:
    result = _run(installed, tmp_path, "-c", "import tvlars; print(tvlars.__file__)")
    assert result.stdout.strip() == str(installed / "tvlars" / "__init__.py")  # not this checkout
    result = _run(installed, tmp_path, "-m", "tvlars.train", "--cfg", "job", "optimizer=tvlars")
    assert result.returncode == 0, result.stderr
    assert "_target_: tvlars.optim.TVLARS" in result.stdout
    result = _run(installed, tmp_path, "-c", "from tvlars.provenance import git_state; print(git_state())")
    assert "'git_commit': '" in result.stdout  # the commit recorded at build time
    assert (installed / "bin" / "tvlars-train").exists() and (installed / "bin" / "tvlars-tables").exists()


def test_installed_wheel_runs_a_smoke_table(installed: Path, tmp_path: Path) -> None:
    result = _run(installed, tmp_path, "-m", "tvlars.tables.reproduce", "--table", "data-path-fmnist", "--profile",
                  "smoke", "--launcher", "basic", "--runs", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "smoke" / "data-path-fmnist" / "results" / "table.md").is_file()
