"""Experiment loggers beside the local records: Weights & Biases (online/offline/disabled) or none.

Only rank 0 builds a real logger. The local run directory is written whatever the logger.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("tvlars")


class NullLogger:
    """Logs nothing (``logger=none``); the local records still hold everything."""

    run_id: str | None = None

    def __init__(self, run_dir: str | None = None) -> None:
        self.run_dir = run_dir

    def start(self, config: dict[str, Any], resume_id: str | None) -> None:
        """Open the run (``resume_id`` continues an earlier one)."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Record ``metrics`` at global ``step``."""

    def finish(self, exit_code: int = 0, preempted: bool = False) -> None:
        """Close the run; always called, also after a failure. ``preempted``: stopped to be resumed (a signal,
        Ctrl-C), not failed."""


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str) -> str:
    """``auto`` → ``$WANDB_MODE`` if set, else ``online`` with a configured API key, else ``offline``."""
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if _has_api_key() else "offline")


class WandbLogger(NullLogger):
    """Weights & Biases run stored under ``<run_dir>/wandb``; a rerun of an unfinished run continues the same W&B
    run (its id is in ``summary.json`` from the start, and in every checkpoint)."""

    def __init__(self, run_dir: str, project: str = "tvlars", entity: str | None = None,
                 group: str | None = None, tags: list[str] | None = None, name: str | None = None,
                 mode: str = "auto") -> None:
        super().__init__(run_dir)
        if mode not in ("auto", "online", "offline", "disabled"):
            raise ValueError(f"logger.mode must be auto, online, offline or disabled (got {mode!r})")
        self.project, self.entity, self.group = project, entity, group
        self.tags, self.name, self.mode = list(tags or []), name, wandb_mode(mode)
        self._run: Any = None

    def start(self, config: dict[str, Any], resume_id: str | None) -> None:
        import wandb

        wandb_dir = Path(self.run_dir or ".")
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=self.project, entity=self.entity, group=self.group, tags=self.tags,
            name=self.name or Path(self.run_dir or "run").name, config=config, dir=str(wandb_dir),
            mode=self.mode, id=resume_id, resume="allow" if resume_id else None,
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.run_id = self._run.id
        if self.mode == "offline":
            log.info("W&B is offline (no API key or WANDB_MODE=offline); upload this run later with: wandb sync %s",
                     self._run.settings.sync_dir)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._run is not None:
            self._run.log(metrics, step=step)

    def finish(self, exit_code: int = 0, preempted: bool = False) -> None:
        if self._run is not None:
            if preempted:
                self._run.mark_preempting()  # W&B shows it preempted, not failed; the rerun continues it
            self._run.finish(exit_code=exit_code)
            self._run = None
