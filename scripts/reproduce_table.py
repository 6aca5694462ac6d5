"""`make reproduce-table`: experiment spec → plan → Hydra multirun (any launcher) → tables and figures.

    python scripts/reproduce_table.py --table fmnist-mini [--launcher basic|joblib|submitit_local|submitit_slurm]
        [--profile full|smoke] [--dry-run] [hydra launcher overrides, e.g. hydra.launcher.n_jobs=2]

Finished runs are skipped (run directories are derived from the config hash), so rerunning resumes a killed
sweep. `--profile smoke` shrinks any table to minutes on fake data in the real on-disk formats.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from tvlars.data import DATASETS, write_fake  # noqa: E402
from tvlars.errors import UserError  # noqa: E402
from tvlars.experiments import load_spec, smoke_spec  # noqa: E402
from tvlars.sweep import describe, launch, measured_throughput, plan, write_job_files  # noqa: E402


def fake_data(root: Path) -> None:
    """A tiny fake of every registered dataset in its real on-disk format (for --profile smoke), written once."""
    for name in DATASETS:
        done = root / f"{name}.done"
        if not done.exists():
            write_fake(name, root, n_train=96, n_test=48)
            done.write_text("ok")


def launcher_defaults(args: argparse.Namespace) -> list[str]:
    """Sensible launcher settings: parallel CPU jobs for joblib; one DDP process per GPU on SLURM."""
    if args.launcher == "joblib":
        return [f"hydra.launcher.n_jobs={args.jobs}"]
    if args.launcher == "submitit_slurm":
        g = args.gpus_per_node
        return [f"hydra.launcher.gpus_per_node={g}", f"hydra.launcher.tasks_per_node={g}"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="fmnist-mini")
    parser.add_argument("--launcher", default="basic")
    parser.add_argument("--profile", choices=("full", "smoke"), default="full")
    parser.add_argument("--runs", default="runs", help="root of the run directories")
    parser.add_argument("--results", default="results", help="root of the generated tables")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel jobs for --launcher joblib (default: one per core, one thread each)")
    parser.add_argument("--gpus-per-node", type=int, default=1,
                        help="SLURM: GPUs (= DDP processes) per run for --launcher submitit_slurm")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    parser.add_argument("launcher_args", nargs="*", help="extra Hydra overrides for the launcher")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.table)
        out_dir, results = Path(args.runs) / spec.name, Path(args.results) / spec.name
        if args.profile == "smoke":
            data_root = Path(args.runs) / "smoke" / "data"
            fake_data(data_root)
            spec = smoke_spec(spec, str(data_root.resolve()))
            out_dir = Path(args.runs) / "smoke" / spec.name
            results = out_dir / "results"
        planned = plan(spec, out_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = "GPU" if args.launcher == "submitit_slurm" or torch.cuda.is_available() else "CPU"
    print(describe(spec, planned, measured_throughput(planned), device), flush=True)
    if args.dry_run:
        return 0
    pending = write_job_files(spec, planned, out_dir / "jobs")
    if pending and args.launcher == "joblib":  # parallel jobs share the cores instead of oversubscribing them
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    if pending:
        code = launch(out_dir / "jobs", args.launcher, launcher_defaults(args) + args.launcher_args,
                      out_dir / "multirun")
        if code:
            print(f"warning: the sweep exited with code {code}; building tables from the runs that finished",
                  file=sys.stderr)
    import make_tables

    return make_tables.main(["--table", str(spec.path), "--profile", args.profile, "--source", str(out_dir),
                             "--out", str(results)])


if __name__ == "__main__":
    sys.exit(main())
