"""Records travel with the tables: tvlars.tables.build copies a table's run records into results/<table>/runs,
rebuilds byte for byte from them (RUN.md included), refuses empty sources and dropped records, removes stale
figures; the commands import the checkout they run from (tvlars.tables.archive, tvlars.tables.build,
tvlars.tables.reproduce)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, cli_env, foreign_lock
from tests.tables.test_accuracy import SPEC, TV, write_run
from tvlars.errors import UserError
from tvlars.lock import LOCK_NAME
from tvlars.tables import archive, build, reproduce


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A study directory: a spec mini.yaml and runs/mini/ with every kind of per-run file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mini.yaml").write_text(SPEC)
    runs = tmp_path / "runs" / "mini"
    for row, point, accs, optimizer in (
            ("LARS (no warm-up)", {"optimizer.lr": 1}, (85.0, 83.0), None),
            ("LARS + warm-up", {"optimizer.lr": 2}, (80.0, 81.0), None),
            ("TVLARS", {"optimizer.lr": 1, "optimizer.lam": 1e-3}, (90.0, 89.0), {**TV, "lam": 1e-3})):
        for seed, acc in enumerate(accs):
            run = write_run(runs, row, 512, point, seed, acc, trust=True, optimizer=optimizer)
            (run / "config.yaml").write_text("seed: 0\n")
            (run / "noise_scale.jsonl").write_text('{"step": 1, "b_simple": 3.0}\n')
            (run / "checkpoint.pt").write_bytes(b"weights")
            (run / "backbone.pt").write_bytes(b"weights")
            (run / ".summary.json.x1.tmp").write_text("{")
            (run / "wandb").mkdir()
            (run / "wandb" / "run.wandb").write_text("w")
            (run / "linear_eval").mkdir()
            (run / "linear_eval" / "metrics.jsonl").write_text("{}\n")
    (runs / "jobs").mkdir()
    (runs / "jobs" / "plan.json").write_text("[]")
    (tmp_path / "runs" / "other").mkdir()
    write_run(tmp_path / "runs" / "other", "TVLARS", 512, {}, 0, 50.0, table="other")
    return tmp_path


def _outputs(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_records_travel_and_rebuild_byte_for_byte(study: Path) -> None:
    main = build.main
    assert main(["--table", "mini.yaml"]) == 0  # runs/mini -> results/mini
    results = study / "results" / "mini"
    copied = sorted(p.relative_to(results / "runs").as_posix() for p in (results / "runs").rglob("*") if p.is_file())
    assert len({p.split("/")[0] for p in copied}) == 6  # the table's runs only: no jobs/, no other table
    names = {p.split("/", 1)[1] for p in copied}
    assert names == {"summary.json", "metrics.jsonl", "trust.jsonl", "noise_scale.jsonl", "config.yaml",
                     "linear_eval/metrics.jsonl"}  # no checkpoint, backbone, W&B or temporary files
    assert {p.name for p in (study / "runs" / "mini").iterdir()} >= {"jobs"}  # the source is untouched
    first = _outputs(results)
    assert set(first) == {"table.md", "table.tex", "table.csv", "accuracy_vs_epoch.png", "trust_ratio.png",
                          "phi.png", "tuning_curve.png", "noise_scale.png", "RUN.md"}  # records hold noise_scale.jsonl
    for name in ("table.md", "table.tex", "table.csv", "RUN.md"):
        assert str(study) not in first[name].decode()  # nothing machine-specific

    # A fresh clone: no runs/, so the committed records are the source; the rebuild is byte-identical.
    os.rename(study / "runs", study / "elsewhere")
    assert main(["--table", "mini.yaml"]) == 0
    assert _outputs(results) == first
    # ... and so is a build from those records into another directory.
    assert main(["--table", "mini.yaml", "--source", str(results / "runs"), "--out", str(study / "copy")]) == 0
    assert _outputs(study / "copy") == first


def test_empty_sources_dropped_records_and_stale_figures(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = build.main
    empty = study / "empty"
    empty.mkdir()
    assert main(["--table", "mini.yaml", "--source", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "holds no run of table mini" in err[0]
    assert not (study / "results").exists()  # nothing was overwritten
    assert main(["--table", "mini.yaml", "--source", str(empty), "--out", str(study / "blank"), "--allow-empty"]) == 0
    assert "| TVLARS | – | 4 | – |" in (study / "blank" / "table.md").read_text()
    broken = study / "broken"  # a reproduction where every run failed must not replace a table with failures
    write_run(broken, "TVLARS", 512, {"optimizer.lr": 1, "optimizer.lam": 1e-3}, 0, None, status="failed",
              error="AttributeError: 'Process' object has no attribute 'env'")
    capsys.readouterr()
    assert main(["--table", "mini.yaml", "--source", str(broken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the 1 run(s) of table mini" in err[0] and "'Process' object" in err[0]
    assert not (study / "results").exists()

    assert main(["--table", "mini.yaml"]) == 0
    results = study / "results" / "mini"
    assert (results / "trust_ratio.png").exists()
    # A newer build whose records hold no trust ratios removes the older trust figure, and refuses to drop the
    # committed records it does not use unless told to.
    newer = study / "newer"
    write_run(newer, "TVLARS", 512, {"optimizer.lr": 1, "optimizer.lam": 1e-3}, 0, 91.0)
    capsys.readouterr()
    assert main(["--table", "mini.yaml", "--source", str(newer)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds 5 run record(s) that this build does not use" in err[0]
    assert "--replace-records" in err[0] and (results / "trust_ratio.png").exists()
    assert main(["--table", "mini.yaml", "--source", str(newer), "--replace-records"]) == 0
    assert not (results / "trust_ratio.png").exists() and (results / "accuracy_vs_epoch.png").exists()
    assert len(list((results / "runs").iterdir())) == 1


def test_continuing_a_committed_study_copies_only_what_is_missing(tmp_path: Path) -> None:
    committed, runs = tmp_path / "results" / "t" / "runs", tmp_path / "runs" / "t"
    for name in ("a", "b"):
        (committed / name).mkdir(parents=True)
        (committed / name / "summary.json").write_text('{"status": "completed"}')
    (runs / "b").mkdir(parents=True)
    (runs / "b" / "summary.json").write_text('{"status": "running"}')
    assert archive.seed_from(committed, runs) == 1
    assert (runs / "a" / "summary.json").exists() and "running" in (runs / "b" / "summary.json").read_text()
    assert archive.record_names(["/x/run", "/y/run", "/x/other"]) == {
        "other": Path("/x/other"), "run": Path("/x/run"), "run~2": Path("/y/run")}


def test_continuing_copies_each_record_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk in the middle of a record's copy leaves no half record (its summary without its metrics) that the
    planner would take for a finished run; the next --continue copies it whole."""
    committed, runs = tmp_path / "results" / "t" / "runs", tmp_path / "runs" / "t"
    (committed / "a").mkdir(parents=True)
    (committed / "a" / "summary.json").write_text('{"status": "completed"}')
    (committed / "a" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (runs / ".a.killed.tmp").mkdir(parents=True)  # what a killed copy left
    copyfile = shutil.copyfile

    def full_at_the_metrics(source: str, target: str, **kwargs: Any) -> Any:
        if os.fspath(source).endswith("metrics.jsonl"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        return copyfile(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", full_at_the_metrics)
    with pytest.raises(UserError, match=f"^cannot copy {committed / 'a'} into {runs} .*No space left"):
        archive.seed_from(committed, runs)
    monkeypatch.undo()
    assert list(runs.iterdir()) == []
    assert archive.seed_from(committed, runs) == 1
    assert sorted(p.name for p in (runs / "a").iterdir()) == ["metrics.jsonl", "summary.json"]


@pytest.mark.parametrize("module", ["build", "reproduce"])
def test_commands_import_the_checkout_they_run_from(module: str, tmp_path: Path) -> None:
    """`python -m tvlars.<command>` from a checkout uses that checkout, whatever else is on the path."""
    impostor = tmp_path / "tvlars"
    impostor.mkdir()
    (impostor / "__init__.py").write_text("raise ImportError('the tvlars of another checkout was imported')\n")
    env = {**cli_env(), "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", f"tvlars.tables.{module}", "--table", "no-such-table",
                             *(["--dry-run"] if module == "reproduce" else [])],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "another checkout" not in result.stderr
    assert result.returncode == 2 and result.stderr.startswith("error: no experiment spec")
    assert str(ROOT / "experiments") in result.stderr  # this checkout's specs


def test_jobs_default_to_the_cpus_this_process_may_use() -> None:
    assert reproduce.usable_cpus() == len(os.sched_getaffinity(0))
    assert "default: one per usable CPU" in reproduce.__doc__ + open(reproduce.__file__).read()


COMMITTED = sorted(p.name for p in (ROOT / "results").iterdir() if p.is_dir()) if (ROOT / "results").is_dir() else []


@pytest.mark.parametrize("table", COMMITTED)
def test_committed_tables_rebuild_from_their_records(table: str, tmp_path: Path) -> None:
    """Every committed results/<table>/ rebuilds byte for byte from its records (as on a fresh clone), RUN.md
    included."""
    committed = ROOT / "results" / table
    if not (committed / "runs").is_dir():
        pytest.skip(f"results/{table} has no runs/ yet: re-run it with `make reproduce-table TABLE={table}`")
    assert build.main(["--table", table, "--source", str(committed / "runs"),
                                        "--out", str(tmp_path)]) == 0
    assert _outputs(tmp_path) == _outputs(committed)


@pytest.fixture
def one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A study directory with a spec mini.yaml and one finished run of it in runs/mini."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mini.yaml").write_text(SPEC + "select_on: test\n")
    write_run(tmp_path / "runs" / "mini", "TVLARS", 512, {"optimizer.lr": 1, "optimizer.lam": 1e-3}, 0, 90.0,
              optimizer={**TV, "lam": 1e-3})
    return tmp_path


def test_a_table_another_process_writes_is_refused_in_one_line(one_run: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    results = Path("results") / "mini"
    foreign_lock(results, "node-17", 4242)
    assert build.main(["--table", "mini.yaml"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: table mini's results directory {results} is in use by pid 4242 on node-17")
    assert [p.name for p in results.iterdir()] == [LOCK_NAME]


def test_a_build_killed_between_the_records_swap_renames_is_repaired_by_the_next(one_run: Path) -> None:
    """The next build puts the committed records back first, so it still refuses to drop them."""
    main = build.main
    assert main(["--table", "mini.yaml"]) == 0
    results = one_run / "results" / "mini"
    committed = sorted(p.name for p in (results / "runs").iterdir())
    (results / "runs").rename(results / ".runs-old-999")  # killed here: the new records not yet in place
    (results / ".runs-new-abc" / "half").mkdir(parents=True)
    newer = one_run / "newer"
    write_run(newer, "TVLARS", 512, {"optimizer.lr": 2, "optimizer.lam": 1e-3}, 0, 91.0, optimizer={**TV, "lam": 1e-3})
    assert main(["--table", "mini.yaml", "--source", str(newer)]) == 2  # would drop the committed record
    assert sorted(p.name for p in results.iterdir() if p.is_dir()) == ["runs"]
    assert sorted(p.name for p in (results / "runs").iterdir()) == committed


def test_a_full_disk_while_writing_a_table_is_one_line(one_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    real_fdopen = os.fdopen

    def full(fd: int, mode: str = "r") -> Any:
        if ".table.md." in os.readlink(f"/proc/self/fd/{fd}"):
            os.close(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fdopen(fd, mode)

    monkeypatch.setattr(os, "fdopen", full)
    assert build.main(["--table", "mini.yaml"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: no space left to write {Path('results') / 'mini' / 'table.md'} "
                           "(No space left on device): it needs 0.0 MB")
    assert not list((one_run / "results" / "mini").glob(".*.tmp"))
