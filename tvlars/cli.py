"""The command line: ``python -m tvlars.train [group=option ...] [key=value ...]`` (also ``tvlars-train``, and under
``torchrun``). Composition errors and anything a user can fix end in one ``error:`` line and exit code 2 before
training starts; Ctrl-C records the run as ``interrupted`` and exits with 130, SIGTERM (and submitit's timeout
signal) after a checkpoint with 128 + the signal's number (:mod:`tvlars.preemption`). Inside a Hydra multirun (a
sweep), a failing job is recorded as ``failed`` with its error line in ``summary.json`` and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tvlars import distributed, preemption
from tvlars.config import run_dir, run_id
from tvlars.errors import UserError
from tvlars.lock import Locked
from tvlars.paths import CONFIG_DIR
from tvlars.records import FINAL, RunRecords, Status
from tvlars.run import run

log = logging.getLogger("tvlars")


def one_line(exc: BaseException) -> str:
    """A Hydra/OmegaConf composition failure as one line naming the key or option and the fix."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = exc.__cause__
    if isinstance(exc, MissingConfigException):
        match = re.search(r"Could not find '([^/']+)/([^']+)'", str(exc))
        if match:
            group, option = match.groups()
            options = sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
            return f"unknown option {group}={option}; available: {', '.join(options)}"
    if isinstance(cause, ConfigAttributeError | ConfigKeyError):
        key = getattr(cause, "full_key", None) or str(cause)
        return (f"unknown config key '{key}' (misspelled?); "
                "`python -m tvlars.train --cfg job` prints every key with its value")
    if isinstance(cause, ValidationError):
        return f"{cause.full_key}: {str(cause).splitlines()[0]}"
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def check_composition(argv: list[str]) -> None:
    """Compose the config as ``main`` will and turn a failure into one ``error:`` line (exit code 2).

    Skipped for multirun and Hydra's own flags (``--cfg``, ``--help``...), where Hydra reports itself.
    """
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose(config_name="config", overrides=argv)
    except Exception as exc:  # noqa: BLE001 - every composition failure is a config error
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)


def record_failure(cfg: DictConfig, error: str) -> None:
    """Write ``status: failed`` and ``error`` into the job's run directory (a sweep job that failed before or while
    running), unless the directory holds a finished run, another experiment or an unreadable record, or another
    process holds it."""
    try:
        rid, records = run_id(cfg), RunRecords(run_dir(cfg))
        with records.locked():
            previous = records.read_summary()
            if records.unreadable_summary() or (previous is not None and (
                    previous.get("run_id") != rid or previous.get("status") in FINAL)):
                return
            base = previous or {"run_id": rid, "run_dir": str(records.dir), "seed": cfg.seed,
                                "config": _container(cfg)}
            records.write_summary({**base, "status": Status.failed.value, "error": error})
    except Locked:
        return
    except Exception as exc:  # noqa: BLE001 - recording must never hide the original error
        print(f"warning: could not record the failure in the run directory ({exc})", file=sys.stderr)


def _container(cfg: DictConfig) -> dict:
    """The config as a plain dict, resolved where possible (the failure may be a broken interpolation)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001
        return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)  # type: ignore[return-value]


def _main_rank() -> bool:
    """Whether this process is rank 0: ``RANK`` once the SLURM/submitit rendezvous has exported it (a rendezvous that
    fails is reported by :func:`run`), else SLURM's task id."""
    with contextlib.suppress(UserError):
        distributed.world_size_from_env()
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def _in_sweep() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """One run (or one job of a multirun); returns the best test top-1 for Hydra sweepers."""
    main_rank = _main_rank()
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING,
                        format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S", force=True)
    sweep = _in_sweep()
    try:
        summary = run(cfg)
    except Locked as exc:
        if not sweep:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        print(f"warning: skipping this job: {exc}", file=sys.stderr)  # another process runs it; the sweep goes on
        return None
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not sweep:
            sys.exit(2)
        if main_rank:
            record_failure(cfg, str(exc))
        return None
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        sys.exit(130)
    except preemption.Stopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.forward is not None:
            exc.forward(exc.signum, None)  # submitit's handler: requeues the job (and exits) on rank 0
        sys.exit(128 + exc.signum)
    except Exception as exc:
        if not sweep:
            raise
        traceback.print_exc()  # a bug, not a user error: the job's log keeps the traceback; the sweep goes on
        if main_rank:
            record_failure(cfg, f"{type(exc).__name__}: {exc}".splitlines()[0])
        distributed.shutdown()
        return None
    # the value a Hydra optimization sweeper maximises: validation accuracy, test only without a validation split
    return summary.get("final_val_top1", summary.get("best_test_top1"))


def main() -> None:
    """Console entry point (``python -m tvlars.train``, ``tvlars-train``)."""
    check_composition(sys.argv[1:])
    _hydra_main()
