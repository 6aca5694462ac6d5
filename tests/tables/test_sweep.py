"""Experiment specs: every spec composes and plans; bad specs fail before launch; smoke sweeps run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import foreign_lock, run_cli
from tests.tables.studies import write_spec
from tvlars.errors import UserError
from tvlars.lock import LOCK_NAME
from tvlars.paths import EXPERIMENTS_DIR
from tvlars.tables import reproduce
from tvlars.tables.design import Job
from tvlars.tables.spec import load_spec, smoke_spec
from tvlars.tables.sweep import PlannedJob, describe, job_file, plan, write_job_files

SPECS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_composes_and_prints_its_plan(name: str, tmp_path: Path) -> None:
    spec = load_spec(name)
    planned = plan(spec, tmp_path)
    assert len(planned) == len(spec.jobs()) > 0
    assert all(p.status == "pending" for p in planned)
    assert len({p.run_dir for p in planned}) == len(planned), "two jobs of one table share a run directory"
    text = describe(spec, planned, None, "GPU")
    assert f"{len(planned)} jobs" in text and "to run" in text
    budgets = {spec.budget(row) for row in spec.rows}
    assert len(budgets) == 1, f"unequal tuning budgets {budgets}"


GOOD = """
title: t
columns: {key: batch_size, values: [16]}
seeds: [0]
rows:
  - {label: a, overrides: [optimizer=sgd], grid: {optimizer.lr: [0.1]}}
"""


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s.replace("optimizer=sgd", "optimizer=nosuch"), "unknown option optimizer=nosuch"),
        (lambda s: s.replace("[0.1]", "[]"), "grid optimizer.lr has no values for 16"),
        (lambda s: s + "colour: red\n", "unknown key 'colour'"),
        (lambda s: s.replace("seeds: [0]", "seeds: []"), "missing or empty 'seeds'"),
        (lambda s: s.replace("optimizer.lr", "optimizer.lrr"), "optimizer.lrr"),
        (lambda s: s.replace("[0.1]", "[-1]"), "optimizer.lr must be >= 0"),
    ],
)
def test_bad_specs_fail_before_anything_launches(edit, needle: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=needle):
        plan(load_spec(write_spec(tmp_path, edit(GOOD), "bad")), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("text", "where", "what"), [
    (GOOD.replace("seeds: [0]", "seeds: [0").encode(), ":5:5: ",
     "expected ',' or ']', but got ':' (while parsing a flow sequence)"),
    (b"title: \xff\n", ": ", "invalid start byte"),
])
def test_a_spec_that_is_not_yaml_is_one_line_with_its_position(text: bytes, where: str, what: str,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    result = run_cli(["--table", str(path), "--dry-run"], module="tvlars.tables.reproduce")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}{where}") and what in line, result.stderr


def test_unknown_table_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="known tables: .*fmnist-mini"):
        load_spec("nosuch")


def test_per_column_grids_and_extends() -> None:
    spec = load_spec("cifar10-mini")  # extends fmnist-mini: its rows (searches), its own base and seeds
    assert spec.seeds == [0] and "dataset=cifar10" in spec.base and spec.confirm_seeds == [0, 1, 2]
    tvlars = next(r for r in spec.rows if r.label == "TVLARS")
    assert all(6 <= p["optimizer.lr"] <= 32 and 0.2 <= p["optimizer.lam"] <= 5 for p in tvlars.points(4096))
    assert all(0.5 <= p["optimizer.lr"] <= 4 for p in tvlars.points(256))  # per-column ranges
    lars = next(r for r in load_spec("ablation-lambda").rows if r.label == "LARS, no warm-up")
    assert lars.points(4096) == [{"optimizer.lr": 12}, {"optimizer.lr": 20}]  # per-column grids


def test_job_file_reproduces_the_planned_run(tmp_path: Path) -> None:
    spec = smoke_spec(load_spec("cifar10"), str(tmp_path / "data"))
    planned = plan(spec, tmp_path / "runs")
    text = job_file(spec, next(p for p in planned if p.job.row == "TVLARS"))
    assert text.startswith("# @package _global_")
    assert "override /optimizer: tvlars" in text and "row: TVLARS" in text
    assert write_job_files(spec, planned, tmp_path / "jobs") == len(planned)
    assert len(list((tmp_path / "jobs" / "sweep_job").glob("*.yaml"))) == len(planned)
    assert len(json.loads((tmp_path / "jobs" / "plan.json").read_text())) == len(planned)


def test_a_second_reproduction_of_a_table_is_refused_before_it_writes_anything(tmp_path: Path) -> None:
    """Two reproductions of one table would rewrite each other's job files under their running sweeps."""
    runs = tmp_path / "runs"
    foreign_lock(runs / "bad", "node-17", 4242)
    result = run_cli(["--table", str(write_spec(tmp_path, GOOD, "bad")), "--runs", str(runs), "--results",
                      str(tmp_path / "results")], module="tvlars.tables.reproduce")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: table bad's runs directory {runs / 'bad'} is in use by pid 4242 on node-17")
    assert [p.name for p in (runs / "bad").iterdir()] == [LOCK_NAME] and not (tmp_path / "results").exists()


def test_slurm_jobs_get_a_time_limit_cpus_and_requeues_the_launcher_accepts() -> None:
    """Without them submitit's defaults apply: a 60-minute limit, no requeue, no CPUs per task."""
    args = reproduce.parse_args(["--launcher", "submitit_slurm", "--gpus-per-node", "4", "--partition", "gpu",
                                 "--qos", "high"])
    result = run_cli([*reproduce.launcher_defaults(args, 1), "hydra/launcher=submitit_slurm", "--cfg", "hydra", "-p",
                      "hydra.launcher"])
    assert result.returncode == 0, result.stderr[-2000:]
    launcher = yaml.safe_load(result.stdout)
    assert {key: launcher[key] for key in ("timeout_min", "max_num_timeout", "cpus_per_task", "gpus_per_node",
                                           "tasks_per_node", "partition", "qos", "account")} == {
        "timeout_min": 240, "max_num_timeout": 10, "cpus_per_task": 8, "gpus_per_node": 4, "tasks_per_node": 4,
        "partition": "gpu", "qos": "high", "account": None}


def _reproduce(table: str, launcher: str, runs: Path) -> None:
    from tvlars.tables import reproduce

    assert reproduce.main(["--table", table, "--profile", "smoke", "--launcher", launcher,
                           "--runs", str(runs)]) == 0


@pytest.mark.slow
@pytest.mark.parametrize(("table", "launcher"), [("cifar10", "basic"), ("barlow_twins-cifar10", "submitit_local")])
def test_smoke_sweep_end_to_end_and_idempotent(table: str, launcher: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _reproduce(table, launcher, tmp_path)
    out_dir = tmp_path / "smoke" / table
    spec = smoke_spec(load_spec(table), str((tmp_path / "smoke" / "data").resolve()))
    planned = plan(spec, out_dir)
    assert {p.status for p in planned} == {"completed"}, [(p.job.row, p.status) for p in planned]
    table_md = (out_dir / "results" / "table.md").read_text()
    assert all(row.label in table_md for row in spec.rows)
    assert (out_dir / "results" / "table.csv").exists() and (out_dir / "results" / "table.tex").exists()
    capsys.readouterr()
    _reproduce(table, launcher, tmp_path)  # a second sweep finds everything done and launches nothing
    assert "to run: 0 jobs" in capsys.readouterr().out


def _planned(memory: int | None, status: str = "pending") -> PlannedJob:
    return PlannedJob(Job("row", 512, 0, {}, ()), [], Path("run"), status, 0, memory)


def test_jobs_sharing_a_gpu_run_as_many_at_a_time_as_their_memory_fits() -> None:
    """Largest first; an estimate too large for the GPU still runs, alone; a finished job is not planned."""
    gib = 2**30
    jobs = [_planned(9 * gib), _planned(3 * gib), _planned(30 * gib), _planned(None), _planned(9 * gib, "completed"),
            _planned(200 * gib)]
    groups = reproduce.concurrent_groups(jobs, 4, free=40 * gib)  # 36 GiB usable
    assert [(n, [p.memory for p in group]) for n, group in groups] == [
        (1, [30 * gib, 200 * gib]), (4, [9 * gib, 3 * gib, None])]


def test_the_cifar10_gpu_table_is_sized_per_batch_size(tmp_path: Path) -> None:
    """The estimate grows with the batch (the saved activations) and is the same for every point of a cell."""
    planned = plan(load_spec("cifar10-gpu"), tmp_path)
    by_batch = {}
    for p in planned:
        by_batch.setdefault(p.job.column, set()).add(p.memory)
    assert all(len(memories) == 1 for memories in by_batch.values())
    small, medium, large = (by_batch[b].pop() for b in (512, 2048, 4096))
    assert small < medium < large < 16 * 2**30  # four jobs fit a 80 GB card
    activations = (large - small) / (4096 - 512)  # bytes per image of the batch: a half-width ResNet-18 in bf16
    assert 0.5e6 < activations < 3e6
