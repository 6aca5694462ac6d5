"""The run directory: resolved config, per-epoch metrics, trust-ratio summaries, checkpoint and summary.

Layout of ``<run_dir>``::

    config.yaml      resolved config of the run
    metrics.jsonl    one JSON object per evaluated epoch
    trust.jsonl      per-layer trust-ratio / norm snapshots every ``log_trust_every`` steps
    evals.jsonl, noise_scale.jsonl, sharpness.jsonl
                     the instruments' rows (tvlars.instruments, docs/instruments.md)
    checkpoint.pt    model, optimizer, schedule, step, epoch, W&B id (written atomically)
    summary.json     final record read by the table builder (written atomically, last)
    .lock            the lock of the process writing the directory (tvlars.lock), while it runs

Only rank 0 creates a :class:`RunRecords`, and writes only while it holds the directory's lock (:meth:`locked`);
every write of a whole file goes through a temporary file and ``os.replace``, so a killed run never leaves a
half-written ``summary.json`` or checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from tvlars.errors import UserError
from tvlars.lock import LOCK_NAME, DirLock

log = logging.getLogger("tvlars")


class Status(str, Enum):
    """The ``status`` of a run in ``summary.json``."""

    running = "running"  # started (or killed without a chance to say so): a rerun resumes it
    completed = "completed"  # final
    diverged = "diverged"  # final: a non-finite training loss; a rerun skips it
    failed = "failed"  # an error ended it (``error`` says which); a rerun retries it
    interrupted = "interrupted"  # Ctrl-C / SIGTERM: a rerun resumes it from the last checkpoint

    @property
    def final(self) -> bool:
        """Whether a rerun skips the run instead of resuming or retrying it."""
        return self in (Status.completed, Status.diverged)


FINAL = tuple(s.value for s in Status if s.final)  # the statuses a rerun skips: compare with ``in FINAL``


class _Counter(io.RawIOBase):
    """A sink that counts the bytes written to it: the size a write that failed needed."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full filesystem, an exhausted quota


def _no_space(path: Path, exc: OSError, needed: int) -> UserError:
    """A write that found no space, as one line naming the file, the space it needs and the space left there."""
    free = shutil.disk_usage(path.parent).free
    return UserError(f"no space left to write {path} ({exc.strerror}): it needs {needed / 1e6:.1f} MB, "
                     f"{free / 1e6:.1f} MB are free there; free space, then rerun the same command to resume from "
                     "the last checkpoint")


def _atomic_write(path: Path, write: Any) -> None:
    """``write(f)`` into a temporary file beside ``path``, then ``os.replace``: ``path`` holds its old content or the
    whole new one. A full disk leaves the old content and raises :func:`_no_space`'s line."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            counter = _Counter()
            write(counter)
            raise _no_space(path, exc, counter.size) from None
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`_atomic_write`)."""
    _atomic_write(path, lambda f: f.write(data))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as pretty JSON to ``path`` atomically."""
    write_atomic(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one per line; a missing file gives none. Lines that are not whole JSON
    objects (the torn last line of a killed run, bytes that are not UTF-8) are dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().decode(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class RunRecords:
    """Reads and writes the files of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.config = self.dir / "config.yaml"
        self.metrics = self.dir / "metrics.jsonl"
        self.trust = self.dir / "trust.jsonl"
        self.evals = self.dir / "evals.jsonl"
        self.noise_scale = self.dir / "noise_scale.jsonl"
        self.sharpness = self.dir / "sharpness.jsonl"
        self.checkpoint = self.dir / "checkpoint.pt"
        self.summary = self.dir / "summary.json"
        self.held: DirLock | None = None  # the directory's lock, once taken: writes stop if it is taken over

    def _not_writable(self, exc: OSError) -> UserError:
        return UserError(f"run directory {self.dir} is not writable ({exc.strerror}); "
                         "set out_dir=<writable dir> or run_dir=<writable dir>")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory's lock (the directory is created if needed), or fail with one line naming its
        holder or the problem."""
        lock = DirLock(self.dir, "run directory")
        try:
            lock.acquire()
        except OSError as exc:
            raise self._not_writable(exc) from None
        self.held = lock
        try:
            yield
        finally:
            lock.release()
            self.held = None

    def _check_held(self) -> None:
        if self.held is not None:
            self.held.check()

    def prepare(self) -> None:
        """Remove temporary files that an interrupted atomic write left behind, or fail with one line."""
        self._check_held()
        try:
            for stale in self.dir.glob(".*.tmp"):
                stale.unlink()
        except OSError as exc:
            raise self._not_writable(exc) from None

    def read_summary(self) -> dict[str, Any] | None:
        """The run's summary, or ``None`` if there is none or it is unreadable (see :meth:`unreadable_summary`)."""
        try:
            summary = json.loads(self.summary.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return summary if isinstance(summary, dict) else None

    def unreadable_summary(self) -> bool:
        """A ``summary.json`` exists but is not a JSON object (damaged, truncated, binary)."""
        return self.summary.exists() and self.read_summary() is None

    def move_aside(self) -> Path:
        """Move the run directory's files but its lock to ``<run_dir>.unreadable-<UTC time>`` (records are never
        deleted) and return where they went."""
        self._check_held()
        target = self.dir.with_name(f"{self.dir.name}.unreadable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        target.mkdir()
        for entry in self.dir.iterdir():
            if entry.name != LOCK_NAME:
                shutil.move(str(entry), target / entry.name)
        log.warning("warning: %s had an unreadable summary.json and no usable checkpoint; its files were moved "
                    "to %s", self.dir, target)
        return target

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._check_held()
        write_json(self.summary, summary)

    def write_config(self, text: str) -> None:
        self._check_held()
        write_atomic(self.config, text.encode())

    def append_jsonl(self, path: Path, rows: list[dict[str, Any]]) -> None:
        """Append ``rows``, first cutting a torn last line (a run killed mid-write) so every line stays whole."""
        self._check_held()
        data = b"".join((json.dumps(row, default=str) + "\n").encode() for row in rows)
        try:
            with path.open("ab") as f:
                if f.tell():
                    with path.open("rb") as existing:
                        tail = existing.read()
                    if not tail.endswith(b"\n"):
                        f.truncate(tail.rfind(b"\n") + 1)
                f.write(data)
        except OSError as exc:
            if exc.errno in _NO_SPACE:  # a torn last line stays behind: the next append cuts it, reads drop it
                raise _no_space(path, exc, len(data)) from None
            raise

    def truncate_after(self, epoch: int, step: int) -> None:
        """Drop the rows of every ``*.jsonl`` log written after the checkpoint at ``epoch``/``step`` (resume):
        rows with a ``step`` after ``step``, or without one but with an ``epoch`` after ``epoch``; torn lines go too."""
        def keep(row: dict[str, Any]) -> bool:
            return row["step"] <= step if "step" in row else row.get("epoch", 0) <= epoch

        self._check_held()
        for path in sorted(self.dir.glob("*.jsonl")):
            rows = [r for r in read_jsonl(path) if keep(r)]
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def summarize(self) -> dict[str, Any]:
        """Best and final metrics from ``metrics.jsonl`` (the single source of per-epoch truth), per evaluated split
        (``val`` when the run has a validation split, ``test``): ``best_<split>_top1``/``top5`` and its epoch
        (``best_epoch`` for test), ``final_<split>_top1``/``top5``/``loss`` and, with precise BN, the final top-1
        with the raw running statistics (``final_<split>_top1_rawbn``); the final epoch's training loss and top-1."""
        rows = read_jsonl(self.metrics)
        out: dict[str, Any] = {"epochs_completed": rows[-1]["epoch"] if rows else 0}
        for split in ("val", "test"):
            evaluated = [r for r in rows if f"{split}_top1" in r]
            if not evaluated:
                continue
            best = max(evaluated, key=lambda r: r[f"{split}_top1"])
            final = evaluated[-1]
            out |= {f"best_{split}_top1": best[f"{split}_top1"], f"best_{split}_top5": best.get(f"{split}_top5"),
                    "best_epoch" if split == "test" else f"best_{split}_epoch": best["epoch"],
                    **{f"final_{split}_{key}": final.get(f"{split}_{key}") for key in ("top1", "top5", "loss")}}
            if f"{split}_top1_rawbn" in final:
                out[f"final_{split}_top1_rawbn"] = final[f"{split}_top1_rawbn"]
        if rows:
            speeds = sorted(r["train_images_per_s"] for r in rows)
            out |= {"final_train_loss": rows[-1].get("train_loss"), "final_train_top1": rows[-1].get("train_top1"),
                    "images_per_s": speeds[len(speeds) // 2]}
        return out

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self._check_held()
        _atomic_write(self.checkpoint, lambda f: torch.save(state, f))

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The saved state, ``None`` if there is none, or a :class:`UserError` if it cannot be read."""
        if not self.checkpoint.exists():
            return None
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise UserError(
                f"checkpoint {self.checkpoint} is corrupt or unreadable ({type(exc).__name__}); "
                "delete it to restart the run from scratch") from None
        if not isinstance(state, dict) or "model" not in state or "train_state" not in state:
            raise UserError(f"checkpoint {self.checkpoint} is not a tvlars checkpoint; delete it to restart the run")
        return state
