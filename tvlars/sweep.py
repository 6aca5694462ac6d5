"""Spec → plan → one Hydra multirun over every pending job, with any launcher (basic, joblib, submitit).

Each job becomes a small config file ``sweep_job/<n>.yaml`` (``# @package _global_``: its group choices as
defaults overrides, its values, and ``labels`` naming its table cell) in a directory added to Hydra's search
path, so one ``python -m tvlars.train -m +sweep_job=glob(*)`` sweeps a grid that is not a Cartesian product
(per-batch-size LR grids) in a single submission. Run directories are derived from the config hash, so a
finished run is found again and skipped: sweeps are idempotent and a killed sweep resumes where it stopped.
Only ``completed`` and ``diverged`` runs are final: failed, running (killed) and missing jobs are launched again.
A run directory whose ``summary.json`` cannot be read (binary, not JSON, no status string) is ``corrupt``: it is
reported and left alone (never overwritten), and reruns once it is deleted.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from tvlars.cli import one_line
from tvlars.config import CONFIG_DIR, default_run_dir, instantiate_node, resolved_lr, run_id, val_size, validate
from tvlars.data import train_size
from tvlars.errors import UserError
from tvlars.records import FINAL, RunRecords, Status
from tvlars.sizing import training_memory
from tvlars.spec import Job, Spec, slug

GROUPS = tuple(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir())


@dataclass
class PlannedJob:
    job: Job
    overrides: list[str]
    run_dir: Path
    status: str  # pending | running | failed | completed | diverged | corrupt
    train_images: int  # images the optimizer under test processes (epochs × train set; SSL: × 2 views)
    memory: int | None = None  # estimated GPU bytes of the run in one process (tvlars.sizing.training_memory)


def job_overrides(spec: Spec, job: Job, out_dir: Path) -> list[str]:
    """The job's overrides plus its readable run-name prefix and the table's run directory."""
    return [*job.overrides, f"name={slug(job.row)}", f"out_dir={out_dir}"]


def compose_job(overrides: list[str]) -> DictConfig:
    """Compose a job's config exactly as the training entry point will (inside ``initialize_config_dir``)."""
    try:
        return compose(config_name="config", overrides=overrides)
    except Exception as exc:  # noqa: BLE001 - any composition failure is a spec error
        raise UserError(f"job {' '.join(overrides)}: {one_line(exc)}") from None


def _with_values(cfg: DictConfig, assignments: list[str]) -> DictConfig:
    """A copy of ``cfg`` with ``key=value`` assignments applied as Hydra would (no group choices)."""
    out = copy.deepcopy(cfg)
    for override in OverridesParser.create().parse_overrides(assignments):
        try:
            OmegaConf.update(out, override.key_or_group, override.value(), merge=True)
        except Exception as exc:  # noqa: BLE001 - an unknown key is a spec error
            raise UserError(f"unknown config key {override.key_or_group!r} in {' '.join(assignments)} "
                            f"({type(exc).__name__})") from None
    return out


def _job_config(job: Job, overrides: list[str], cells: dict[Any, DictConfig]) -> DictConfig:
    """Compose once per table cell, then apply the job's grid point and seed as values (Hydra composition
    costs ~0.1 s; a table has hundreds of jobs). Grid keys that are config groups get a full composition."""
    varying = [*(f"{k}={v}" for k, v in job.point.items()), f"seed={job.seed}"]
    if any(key in GROUPS for key in job.point):
        return compose_job(overrides)
    cell = (job.row, job.column)
    if cell not in cells:
        cells[cell] = compose_job([o for o in overrides if o not in varying])
    return _with_values(cells[cell], varying)


def train_set_size(cfg: DictConfig) -> int:
    """Training images of a run, known without loading data: the declared training set less the validation split,
    or ``train_subset`` of it."""
    size = train_size(cfg.dataset) - val_size(cfg)
    return min(cfg.train_subset, size) if cfg.train_subset else size


def _train_images(cfg: DictConfig) -> int:
    """Images the optimizer under test processes: epochs × the training set (its declared size) × the task's views."""
    return int(train_set_size(cfg) * cfg.epochs * get_object(cfg.task._target_).views)


def check_steps(spec: Spec, cfg: DictConfig) -> None:
    """Refuse a run with too few optimizer steps to compare schedules (``min_steps``), or whose warm-up spans fewer
    than ``min_warmup_steps`` steps (a warm-up that hardly exists), with one line naming the fix."""
    steps_per_epoch = train_set_size(cfg) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    if total < spec.min_steps:
        raise UserError(f"{total} optimizer steps ({cfg.epochs} epoch(s) × {steps_per_epoch} steps of "
                        f"{cfg.batch_size} images) are too few to compare schedules (min_steps: {spec.min_steps}); "
                        f"raise epochs or lower the batch size, or set min_steps: {total} in {spec.path or spec.name}")
    if not spec.min_warmup_steps or steps_per_epoch < 1:
        return
    schedule = instantiate_node(cfg.schedule, "schedule", base_lr=resolved_lr(cfg), steps_per_epoch=steps_per_epoch,
                                total_steps=total)
    problem = schedule.warmup_problem(spec.min_warmup_steps)
    if problem:
        raise UserError(f"{problem}, or set min_warmup_steps: 0 in {spec.path or spec.name} to accept it")


HELD = (*FINAL, "corrupt")  # ... and records it leaves alone


def recorded_status(run_dir: Path) -> str:
    """The run's status from its ``summary.json``: ``pending`` without one, ``corrupt`` if it cannot be read
    (not UTF-8, not JSON, not an object, no status string)."""
    path = run_dir / "summary.json"
    if not path.exists():
        return "pending"
    try:
        summary = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return "corrupt"
    status = summary.get("status") if isinstance(summary, dict) else None
    return status if isinstance(status, str) else "corrupt"


def plan(spec: Spec, out_dir: Path, jobs: list[Job] | None = None) -> list[PlannedJob]:
    """Compose and validate every job (any bad override fails here, before anything launches); ``jobs``
    defaults to the spec's search-phase jobs."""
    planned: list[PlannedJob] = []
    cells: dict[Any, DictConfig] = {}
    memories: dict[str, int | None] = {}  # by what the estimate reads: one per row and batch size, not per point
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for job in spec.jobs() if jobs is None else jobs:
            overrides = job_overrides(spec, job, out_dir)
            cfg = _job_config(job, overrides, cells)
            try:
                validate(cfg)
                check_steps(spec, cfg)
            except UserError as exc:
                raise UserError(f"table {spec.name}, row {job.row!r}, {spec.column_key}={job.column}: {exc}") from None
            run_dir = default_run_dir(cfg, run_id(cfg))
            resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
            sized = json.dumps([resolved[key] for key in ("model", "task", "dataset", "batch_size", "precision")],
                               sort_keys=True, default=str)
            if sized not in memories:
                memories[sized] = training_memory(cfg)
            planned.append(PlannedJob(job, overrides, run_dir, recorded_status(run_dir), _train_images(cfg),
                                      memories[sized]))
    return planned


def measured_throughput(planned: list[PlannedJob]) -> float | None:
    """Median images/s of this table's finished runs (None before any has finished)."""
    speeds = sorted(s["images_per_s"] for p in planned if p.status == Status.completed
                    and isinstance(s := RunRecords(p.run_dir).read_summary(), dict)
                    and isinstance(s.get("images_per_s"), int | float) and s["images_per_s"] > 0)
    return speeds[len(speeds) // 2] if speeds else None


def describe(spec: Spec, planned: list[PlannedJob], throughput: float | None, device: str) -> str:
    """The plan printed before launching: job counts by status and the estimated device-hours."""
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.status] = counts.get(p.status, 0) + 1
    todo = [p for p in planned if p.status not in HELD]
    lines = [f"table {spec.name}: {spec.display_title}",
             f"  {len(planned)} jobs = {len(spec.rows)} rows × {len(spec.columns)} {spec.column_key} values × "
             f"grid × {len(spec.seeds)} seeds; " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
             f"  to run: {len(todo)} jobs, {sum(p.train_images for p in todo) / 1e6:.2f} M training images"]
    if throughput:
        hours = sum(p.train_images for p in todo) / throughput / 3600
        lines.append(f"  estimate: {hours:.2f} {device}-hours at {throughput:.0f} images/s "
                     "(median of this table's finished runs)")
    else:
        lines.append("  estimate: no finished run of this table yet to measure throughput; the first runs will "
                     "provide it (see `make bench` for this machine's images/s)")
    corrupt = [p.run_dir for p in planned if p.status == "corrupt"]
    if corrupt:
        lines.append(f"  problem: {len(corrupt)} run director(ies) hold an unreadable summary.json and are left alone "
                     f"(e.g. {corrupt[0]}); delete them to rerun those jobs")
    return "\n".join(lines)


def _nested(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.lstrip("+").split(".")
    for key in parents:
        target = target.setdefault(key, {})
    target[leaf] = value


def job_file(spec: Spec, planned: PlannedJob) -> str:
    """A ``# @package _global_`` config reproducing the job's overrides, with its table labels."""
    choices: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(planned.overrides):
        key, value = override.key_or_group, override.value()
        if key in GROUPS:
            choices[key] = value  # the last choice of a group wins, as on the command line
        else:
            _nested(values, key, value)
    defaults: list[Any] = [{f"override /{group}": choice} for group, choice in choices.items()]
    job = planned.job
    values["labels"] = {"table": spec.name, "row": job.row, "column": job.column, "point": job.point}
    return "# @package _global_\n" + yaml.safe_dump({"defaults": [*defaults, "_self_"], **values}, sort_keys=False)


def write_job_files(spec: Spec, planned: list[PlannedJob], jobs_root: Path) -> int:
    """(Re)write one config per job still to run under ``jobs_root/sweep_job``; returns their number."""
    group = jobs_root / "sweep_job"
    shutil.rmtree(group, ignore_errors=True)
    group.mkdir(parents=True)
    todo = [p for p in planned if p.status not in HELD]
    for i, p in enumerate(todo):
        (group / f"job_{i:05d}.yaml").write_text(job_file(spec, p))
    (jobs_root / "plan.json").write_text(json.dumps(
        [{"row": p.job.row, "column": p.job.column, "seed": p.job.seed, "point": p.job.point,
          "status": p.status, "run_dir": str(p.run_dir)} for p in planned], indent=1, default=str))
    return len(todo)


def multirun_command(jobs_root: Path, launcher: str, launcher_args: list[str], sweep_dir: Path) -> list[str]:
    """The multirun over every job file (listed explicitly: Hydra's glob() does not expand appended groups)."""
    jobs = ",".join(sorted(p.stem for p in (jobs_root / "sweep_job").glob("*.yaml")))
    return [sys.executable, "-m", "tvlars.train", "--multirun", f"hydra.searchpath=[file://{jobs_root.resolve()}]",
            f"+sweep_job={jobs}", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}", *launcher_args]


def launch(jobs_root: Path, launcher: str, launcher_args: list[str], sweep_dir: Path) -> int:
    """Run the sweep through Hydra's multirun; returns its exit code."""
    command = multirun_command(jobs_root, launcher, launcher_args, sweep_dir)
    shown = [c if not c.startswith("+sweep_job=") else f"+sweep_job=<{c.count(',') + 1} jobs>" for c in command]
    print("$ " + " ".join(shown), flush=True)
    return subprocess.run(command, check=False).returncode
