"""`make gpu-check`: prove that a GPU node runs tvlars, in at most 8 minutes on one GPU.

    python scripts/gpu_check.py [--budget 450] [--out DIR] [--only STEP,...] [--wheels DIR]
    python scripts/gpu_check.py --dry-run        the steps, their planned times and commands (any machine)
    python scripts/gpu_check.py --validate       compose and validate every config the check trains (any machine)
    python scripts/gpu_check.py --smoke          every step at toy sizes on the CPU, to test the check itself
    python scripts/gpu_check.py --fetch-wheels   (where pip reaches PyPI) the pure-Python wheels into .gpu/wheels

Logs go to ``--out`` (``$OUT`` if set, else ``gpu-check/``), ending in ``report.md`` (also printed): device,
driver/CUDA/cuDNN/NCCL/torch versions, one line per step (PASS, SLOW, FAIL, TIMEOUT, SKIP or N/A, seconds, key
figures), then the details. Exit code 0 when every step passed (SLOW included), 1 when one did not, 2 when the
check cannot start (no CUDA device, a missing package, no compiler for Triton): one ``error:`` line.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tvlars.errors import UserError
from tvlars.gpu_check import preflight, report
from tvlars.gpu_check.plan import CHECKOUT, DEFAULT_BUDGET_S, dry_run, plan, select, validate_configs
from tvlars.gpu_check.runner import PASSING, Result, run_all


def run_check(args: argparse.Namespace, started: float) -> int:
    if importlib.util.find_spec("torch") is None:
        raise UserError(f"torch is not installed in {sys.executable}; run the check with the Python that has it "
                        "(make gpu-check GPU_PY=/path/to/python)")
    import torch

    if not args.smoke and not torch.cuda.is_available():
        raise UserError(f"torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda or 'none'}); "
                        "run `make gpu-check` on a GPU node (`--smoke` tests the check itself on the CPU)")
    out: Path = args.out
    work = Path(tempfile.mkdtemp(prefix="tvlars-gpu-check-"))
    try:
        steps = select(plan(work, args.smoke), args.only)
        try:
            out.mkdir(parents=True, exist_ok=True)
            report.clear_outputs(out, steps)
            (out / "report.md").write_text("running\n")
        except OSError as exc:
            raise UserError(f"output directory {out} is not writable ({exc.strerror}); pass --out DIR") from None
        env = preflight.step_env(work / "site", work)
        wheels = preflight.ensure_modules(args.wheels, work / "site", env, args.smoke)
        if not args.smoke:
            preflight.check_compiler()
        header = report.environment(args.smoke, wheels)
        print("\n".join(header), flush=True)

        def progress(result: Result) -> None:
            print(f"[{time.monotonic() - started:4.0f} s] {result.step.name}: {result.status} ({result.seconds:.0f} s) "
                  f"{result.verdict.figures}", flush=True)

        results = run_all(steps, started + args.budget, out, env, progress)
        report.keep_records(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report.render(results, header, args.budget, time.monotonic() - started, out)
    (out / "report.md").write_text(text)
    print("\n" + text, end="")
    return 0 if all(r.status in PASSING for r in results) else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the steps, their planned times and commands")
    mode.add_argument("--validate", action="store_true", help="compose and validate every config the check trains")
    mode.add_argument("--fetch-wheels", action="store_true", help="download the pure-Python wheels (needs PyPI)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (tests the check itself)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="global deadline in seconds")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or CHECKOUT / "gpu-check"),
                        help="logs and report.md ($OUT if set, else gpu-check/)")
    parser.add_argument("--only", help="comma-separated step names")
    parser.add_argument("--wheels", type=Path, default=preflight.DEFAULT_WHEELS, help="wheels to install when a "
                        "package is missing (default .gpu/wheels); the directory --fetch-wheels fills")
    parser.add_argument("--python-version", default="3.12", help="--fetch-wheels: the GPU node's Python")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    try:
        if args.dry_run:
            print(dry_run(select(plan(Path("<tmp>"), args.smoke), args.only), args.budget))
            return 0
        if args.fetch_wheels:
            preflight.fetch_wheels(args.wheels, args.python_version)
            return 0
        if args.validate:
            with tempfile.TemporaryDirectory(prefix="tvlars-gpu-check-") as work:
                site = Path(work) / "site"
                preflight.ensure_modules(args.wheels, site, preflight.step_env(site, Path(work)), args.smoke)
                sys.path.insert(0, str(site))
                names = validate_configs(plan(Path(work), args.smoke))
            print(f"validated the configs of {len(names)} steps: {', '.join(names)}")
            return 0
        return run_check(args, started)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
