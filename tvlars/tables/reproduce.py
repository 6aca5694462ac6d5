"""`make reproduce-table`: experiment spec → plan → Hydra multirun (any launcher) → tables, figures, records →
a comparison with the committed table.

    python -m tvlars.tables.reproduce --table fmnist-mini [--launcher basic|joblib|submitit_local|submitit_slurm]
        [--profile full|smoke] [--continue] [--dry-run] [SLURM: --gpus-per-node --time-min --requeues
        --cpus-per-task --partition --account --qos] [hydra launcher overrides, e.g. hydra.launcher.n_jobs=2]

Runs go to ``runs/<table>/``. Finished runs are skipped (run directories are derived from the config hash), so
rerunning resumes a killed sweep; ``--continue`` first copies the committed records of ``results/<table>/runs``
into ``runs/<table>/`` so that only what the committed study lacks runs. With ``confirm_seeds`` in the spec, a
second sweep re-runs each cell's chosen point with those seeds once the cell's search trials have finished.
The table is then written to ``results/<table>/`` (with its records) and compared cell by cell with the table
that was there before. ``--profile smoke`` shrinks any table to minutes on fake data in the real on-disk formats.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import torch

from tvlars.data import DATASETS, write_fake
from tvlars.data.loaders import usable_cpus
from tvlars.errors import UserError
from tvlars.lock import DirLock
from tvlars.records import write_atomic
from tvlars.tables import archive, build
from tvlars.tables.collect import collect
from tvlars.tables.design import Spec
from tvlars.tables.kinds import KINDS
from tvlars.tables.spec import load_spec, smoke_spec
from tvlars.tables.sweep import HELD, PlannedJob, describe, launch, measured_throughput, plan, write_job_files


def fake_data(root: Path) -> None:
    """A tiny fake of every registered dataset in its real on-disk format (for --profile smoke), written once."""
    for name in DATASETS:
        done = root / f"{name}.done"
        if not done.exists():
            write_fake(name, root, n_train=96, n_test=48)
            done.write_text("ok")


def launcher_defaults(args: argparse.Namespace, jobs: int) -> list[str]:
    """Sensible launcher settings: ``jobs`` parallel jobs for joblib; on SLURM one DDP process per GPU, the job's
    time limit, CPUs, partition, account and QOS, and how often a job that reaches its time limit is requeued (it
    checkpoints on submitit's timeout signal and resumes, tvlars.preemption)."""
    if args.launcher == "joblib":
        return [f"hydra.launcher.n_jobs={jobs}"]
    if args.launcher == "submitit_slurm":
        g = args.gpus_per_node
        return [f"hydra.launcher.gpus_per_node={g}", f"hydra.launcher.tasks_per_node={g}",
                f"hydra.launcher.timeout_min={args.time_min}", f"hydra.launcher.cpus_per_task={args.cpus_per_task}",
                f"hydra.launcher.max_num_timeout={args.requeues}",
                *(f"hydra.launcher.{key}={value}" for key in ("partition", "account", "qos")
                  if (value := getattr(args, key)) is not None)]
    return []


MEMORY_USE = 0.9  # of the GPU's free memory, for the jobs sharing it


def free_gpu_memory() -> int:
    """Free bytes of the GPU the jobs will share (``torch.cuda.mem_get_info``), asked in a child process, so that
    this one holds no CUDA context of its own during the sweep."""
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.mem_get_info()[0])"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def concurrent_groups(planned: list[PlannedJob], jobs: int, free: int) -> list[tuple[int, list[PlannedJob]]]:
    """The pending jobs of ``planned`` grouped by how many of them fit the GPU's ``free`` bytes at once (their
    estimated memory against :data:`MEMORY_USE` of it, at most ``jobs``, at least 1; without an estimate,
    ``jobs``), the largest jobs first."""
    groups: dict[int, list[PlannedJob]] = {}
    for p in planned:
        if p.status not in HELD:
            fits = jobs if p.memory is None else max(1, min(jobs, int(free * MEMORY_USE // p.memory)))
            groups.setdefault(fits, []).append(p)
    return sorted(groups.items())


def sweep(spec: Spec, planned: list[PlannedJob], jobs_root: Path, out_dir: Path, args: argparse.Namespace) -> None:
    """Launch the pending jobs of ``planned`` (if any) as one multirun; joblib jobs sharing one GPU as one multirun
    per group of :func:`concurrent_groups`, so that jobs that together exceed its memory never run at once."""
    groups = [(args.jobs, planned)]
    if args.launcher == "joblib" and torch.cuda.is_available():
        free = free_gpu_memory()
        groups = concurrent_groups(planned, args.jobs, free)
        for jobs, group in groups:
            largest = max((p.memory or 0) for p in group)
            print(f"  GPU memory: {len(group)} job(s) of up to {largest / 2**30:.1f} GiB (estimated) run {jobs} at a "
                  f"time against {free / 2**30:.1f} GiB free", flush=True)
    for jobs, group in groups:
        root = jobs_root if len(groups) == 1 else jobs_root / f"{jobs}-at-a-time"
        if not write_job_files(spec, group, root):
            continue
        if args.launcher == "joblib":  # parallel jobs share the cores instead of oversubscribing them
            os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cpus() // args.jobs)))
        code = launch(root, args.launcher, launcher_defaults(args, jobs) + args.launcher_args,
                      out_dir / f"multirun-{root.name}")
        if code:
            print(f"warning: the sweep exited with code {code}; going on with the runs that finished", file=sys.stderr)


def confirmation_plan(spec: Spec, out_dir: Path) -> tuple[list[PlannedJob], int]:
    """The confirmation runs of every cell whose search trials have all finished, and how many cells wait."""
    cells, _ = KINDS[spec.kind].select(spec, collect(out_dir)) if out_dir.is_dir() else ({}, [])
    ready = {key: cell.point for key, cell in cells.items() if cell.search_done and cell.point is not None}
    waiting = len(spec.rows) * len(spec.columns) - len(ready)
    return plan(spec, out_dir, spec.confirm_jobs(ready)), waiting


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m tvlars.tables.reproduce``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="fmnist-mini")
    parser.add_argument("--launcher", default="basic")
    parser.add_argument("--profile", choices=("full", "smoke"), default="full")
    parser.add_argument("--runs", default="runs", help="root of the run directories")
    parser.add_argument("--results", default="results", help="root of the generated tables")
    parser.add_argument("--jobs", type=int, default=usable_cpus(),
                        help="parallel jobs for --launcher joblib (default: one per usable CPU, one thread each; "
                        "on a GPU at most this many, fewer where their estimated memory does not fit)")
    parser.add_argument("--gpus-per-node", type=int, default=1,
                        help="SLURM: GPUs (= DDP processes) per run for --launcher submitit_slurm")
    parser.add_argument("--time-min", type=int, default=240,
                        help="SLURM: each job's time limit in minutes; a job that reaches it checkpoints and is "
                             "requeued (default 240)")
    parser.add_argument("--requeues", type=int, default=10,
                        help="SLURM: how many times a job that reached its time limit is requeued (default 10)")
    parser.add_argument("--cpus-per-task", type=int, default=8,
                        help="SLURM: CPUs per DDP process, for its DataLoader workers (default 8)")
    for key in ("partition", "account", "qos"):
        parser.add_argument(f"--{key}", help=f"SLURM: the {key} to submit to (default: the cluster's)")
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="continue the committed study: copy results/<table>/runs into runs/<table> first")
    parser.add_argument("--replace-records", action="store_true",
                        help="let results/<table>/runs lose committed records that this reproduction lacks")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    parser.add_argument("launcher_args", nargs="*", help="extra Hydra overrides for the launcher")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as held:
        return reproduce(args, held)


def reproduce(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    """Plan, sweep and tabulate ``args.table``; unless it is a dry run, ``held`` holds the table's runs directory
    (its job files, plan and comparison are one reproduction's: a second one is refused, tvlars.lock)."""
    try:
        spec = load_spec(args.table)
        out_dir, results = Path(args.runs) / spec.name, Path(args.results) / spec.name
        if args.profile == "smoke":
            data_root = Path(args.runs) / "smoke" / "data"
            fake_data(data_root)
            spec = smoke_spec(spec, str(data_root.resolve()))
            out_dir = Path(args.runs) / "smoke" / spec.name
            results = out_dir / "results"
        if not args.dry_run:
            held.enter_context(DirLock(out_dir, f"table {spec.name}'s runs directory"))
        if args.resume and not args.dry_run:
            print(f"continuing the committed study: {archive.seed_from(results / 'runs', out_dir)} record(s) "
                  f"copied from {results / 'runs'} into {out_dir}")
        planned = plan(spec, out_dir)
        confirm, waiting = confirmation_plan(spec, out_dir) if spec.confirm_seeds else ([], 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {exc.filename} ({exc.strerror}); pass --runs <writable dir>", file=sys.stderr)
        return 2
    device = "GPU" if args.launcher == "submitit_slurm" or torch.cuda.is_available() else "CPU"
    print(describe(spec, planned, measured_throughput(planned), device), flush=True)
    if spec.confirm_seeds:
        todo = sum(p.status not in HELD for p in confirm)
        print(f"  confirmation: each cell's chosen point re-runs with seeds {spec.confirm_seeds}: {todo} run(s) to "
              f"go now, {waiting} cell(s) still wait for their search trials", flush=True)
    if args.dry_run:
        return 0
    kind = KINDS[spec.kind]
    committed = (results / kind.csv).read_text() if (results / kind.csv).is_file() else None
    sweep(spec, planned, out_dir / "jobs", out_dir, args)
    if spec.confirm_seeds:
        confirm, waiting = confirmation_plan(spec, out_dir)
        sweep(spec, confirm, out_dir / "jobs-confirm", out_dir, args)
    code = build.main(["--table", str(spec.path), "--profile", args.profile, "--source", str(out_dir),
                       "--out", str(results), *(["--replace-records"] if args.replace_records else [])])
    if code == 0 and committed is not None:
        report = kind.compare(committed, kind.build(spec, collect(out_dir)))
        write_atomic(out_dir / "comparison.md", report.encode())
        print(f"\n{report}(also in {out_dir / 'comparison.md'})")
    return code


if __name__ == "__main__":
    sys.exit(main())
