"""A table's run records beside it: ``results/<table>/runs/<run dir name>/`` holds every run the table was built
from, without checkpoints, backbones, W&B files or temporary files, so that ``make tables`` rebuilds the table
from a fresh clone and a reviewer can audit any cell.

Every file is written atomically (:func:`tvlars.records.write_atomic`); the records directory is swapped in whole,
so a killed build leaves the previous records or the new ones, never a mixture (a build killed between the swap's
two renames is repaired by the next one, :func:`recover`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tvlars.errors import UserError
from tvlars.lock import LOCK_NAME

# What stays behind when records are copied (checkpoints and backbones are large and not needed by any table; a
# lock belongs to the process writing the source).
EXCLUDED = ("*.pt", "*.pth", "*.ckpt", "wandb", "*.tmp", f"{LOCK_NAME}*")


def record_names(run_dirs: Iterable[str | Path]) -> dict[str, Path]:
    """Run directory → its name under ``runs/``: the directory's own name (what the planner looks for), with
    ``~2``, ``~3``... for a second directory of the same name elsewhere in the source."""
    names: dict[str, Path] = {}
    for run_dir in sorted({Path(d) for d in run_dirs}):
        name, n = run_dir.name, 1
        while name in names:
            n += 1
            name = f"{run_dir.name}~{n}"
        names[name] = run_dir
    return names


def check_replace(records: Path, names: Iterable[str], allowed: bool) -> None:
    """Refuse to drop committed records that the new build does not have, unless ``allowed``."""
    if not records.is_dir():
        return
    dropped = sorted(p.name for p in records.iterdir() if p.is_dir() and p.name not in set(names))
    if dropped and not allowed:
        raise UserError(f"{records} holds {len(dropped)} run record(s) that this build does not use (e.g. "
                        f"{dropped[0]}); pass --replace-records to replace them (git keeps the committed ones), or "
                        "`make reproduce-table ARGS=--continue` to extend that study")


def recover(records: Path) -> None:
    """Undo what a build killed inside :func:`copy_records` left beside ``records``: the previous records moved aside
    but the new ones not yet in place go back; staging copies and previous records already replaced go."""
    for old in sorted(records.parent.glob(".runs-old-*")):
        if records.exists():
            shutil.rmtree(old)
        else:
            old.rename(records)
    for staging in records.parent.glob(".runs-new-*"):
        shutil.rmtree(staging)


def copy_records(names: dict[str, Path], records: Path) -> None:
    """Make ``records`` hold exactly the runs ``names`` (name → run directory), swapped in whole."""
    records.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=records.parent, prefix=".runs-new-"))
    try:
        for name, run_dir in names.items():
            shutil.copytree(run_dir, staging / name, ignore=shutil.ignore_patterns(*EXCLUDED))
        old = records.parent / f".runs-old-{os.getpid()}"
        if records.exists():
            records.rename(old)
        staging.rename(records)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def seed_from(records: Path, runs: Path) -> int:
    """Copy committed records into ``runs`` where a run directory of that name is absent (continuing a committed
    study); returns how many were copied. Existing run directories are never touched; each record appears whole or
    not at all (copied beside, then renamed: a full disk or a kill leaves no half record that looks finished)."""
    if not records.is_dir():
        raise UserError(f"no committed records in {records} to continue from; run without --continue")
    runs.mkdir(parents=True, exist_ok=True)
    for stale in runs.glob(".*.tmp"):  # a copy a killed --continue left
        shutil.rmtree(stale)
    copied = 0
    for record in sorted(p for p in records.iterdir() if p.is_dir()):
        if not (runs / record.name).exists():
            staging = Path(tempfile.mkdtemp(dir=runs, prefix=f".{record.name}.", suffix=".tmp"))
            try:
                shutil.copytree(record, staging, dirs_exist_ok=True)
                staging.rename(runs / record.name)
            except OSError as exc:  # copytree gathers its files' errors into one shutil.Error
                reason = exc.args[0][0][2] if isinstance(exc, shutil.Error) else exc.strerror
                raise UserError(f"cannot copy {record} into {runs} ({reason}); free space and rerun") from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            copied += 1
    return copied


def size(records: Path) -> tuple[int, int]:
    """Run directories and bytes under ``records``."""
    if not records.is_dir():
        return 0, 0
    total = sum(p.stat().st_size for p in records.rglob("*") if p.is_file())
    return sum(1 for p in records.iterdir() if p.is_dir()), total
