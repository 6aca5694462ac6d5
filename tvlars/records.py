"""The run directory: resolved config, per-epoch metrics, trust-ratio summaries, checkpoint and summary.

Layout of ``<run_dir>``::

    config.yaml      resolved config of the run
    metrics.jsonl    one JSON object per evaluated epoch
    trust.jsonl      per-layer trust-ratio / norm snapshots every ``log_trust_every`` steps
    checkpoint.pt    model, optimizer, schedule, step, epoch, W&B id (written atomically)
    summary.json     final record read by the table builder (written atomically, last)

Only rank 0 creates a :class:`RunRecords`; every write of a whole file goes through a temporary file and
``os.replace``, so a killed run never leaves a half-written ``summary.json`` or checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from tvlars.errors import UserError

STATUSES = ("running", "completed", "diverged", "failed")


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as pretty JSON to ``path`` atomically."""
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, default=str) + "\n").encode()))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunRecords:
    """Reads and writes the files of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.config = self.dir / "config.yaml"
        self.metrics = self.dir / "metrics.jsonl"
        self.trust = self.dir / "trust.jsonl"
        self.checkpoint = self.dir / "checkpoint.pt"
        self.summary = self.dir / "summary.json"

    def prepare(self) -> None:
        """Create the directory and prove it is writable, or fail with one line naming it."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise UserError(
                f"run directory {self.dir} is not writable ({exc.strerror}); "
                "set out_dir=<writable dir> or run_dir=<writable dir>") from None

    def read_summary(self) -> dict[str, Any] | None:
        if not self.summary.exists():
            return None
        try:
            return json.loads(self.summary.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary, summary)

    def write_config(self, text: str) -> None:
        _atomic_write(self.config, lambda f: f.write(text.encode()))

    def append_jsonl(self, path: Path, rows: list[dict[str, Any]]) -> None:
        with path.open("a") as f:
            f.writelines(json.dumps(row, default=str) + "\n" for row in rows)

    def truncate_after(self, epoch: int) -> None:
        """Drop metric rows and trust rows written after the checkpoint at ``epoch`` (resume)."""
        for path in (self.metrics, self.trust):
            if not path.exists():
                continue
            rows = [r for r in read_jsonl(path) if r.get("epoch", 0) <= epoch]
            _atomic_write(path, lambda f, rows=rows: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
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
