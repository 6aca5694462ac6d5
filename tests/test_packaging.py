"""tvlars installs anywhere: a wheel built from this checkout, installed outside the repository, composes configs
and runs a smoke table from another working directory, and records the commit it was built from; an editable
install (what ``make`` does) reads the checkout's own configs/ and experiments/."""

from __future__ import annotations

import json
import os
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


@pytest.fixture(scope="module")
def editable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout installed editable (``pip install -e``, without dependencies) into a scratch prefix; returns
    the prefix's site-packages, which holds the install's path hooks."""
    prefix = tmp_path_factory.mktemp("editable")
    subprocess.run([sys.executable, "-m", "pip", "install", "-e", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "--prefix", str(prefix)], check=True, capture_output=True, timeout=600)
    [site] = prefix.glob("lib/python*/site-packages")
    return site


def test_an_editable_install_reads_the_checkouts_configs_and_specs(editable: Path, tmp_path: Path) -> None:
    """From another directory, with no other copy of tvlars in reach (``-S``: this environment's own install hooks
    stay out; its packages come through PYTHONPATH), the editable install finds the top-level trees."""
    dependencies = os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))
    code = (f"import site; site.addsitedir({str(editable)!r}); import runpy, sys; import tvlars.paths as p; "
            "print(p.CONFIG_DIR, p.EXPERIMENTS_DIR); sys.argv = ['tvlars.train', '--cfg', 'job', 'optimizer=lars']; "
            "runpy.run_module('tvlars.train', run_name='__main__')")
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**cli_env(), "PYTHONPATH": dependencies}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0] == f"{ROOT / 'configs'} {ROOT / 'experiments'}"
    assert "_target_: tvlars.optim.LARS" in result.stdout

