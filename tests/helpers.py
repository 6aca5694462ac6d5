"""What tests share besides fixtures: the tiny run's overrides, config composition and the CLI in a subprocess.

Tests import it as ``from tests.helpers import ...`` (the repository root is on ``sys.path``; pytest's
``pythonpath``), as they import ``tests.nosync`` and ``tests.optim.*``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from tvlars.config import compose
from tvlars.lock import LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent

# A learnable 16×16 synthetic dataset and a narrow ResNet-18: a few seconds per run on 2 CPU cores. Pinned to the
# CPU: these tests mean CPU behaviour (exact resume, gloo DDP) also on a machine with GPUs.
TINY = [
    "device=cpu", "dataset=synthetic", "dataset.num_train=256", "dataset.num_test=128", "dataset.image_size=16",
    "model=resnet18", "model.width=0.0625", "logger=none", "epochs=2", "batch_size=64", "eval_batch_size=128",
    "progress=lines",
]


def tiny(*overrides: str) -> list[str]:
    """TINY plus ``overrides``; choosing another option of a group drops TINY's settings for that group."""
    chosen = {o.split("=")[0] for o in overrides if "." not in o.split("=")[0]}
    return [*(o for o in TINY if o.split("=")[0].split(".")[0] not in chosen), *overrides]


def compose_config(overrides: list[str]) -> DictConfig:
    """The config the entry point would compose from ``overrides``."""
    return compose(overrides)


def cli_env() -> dict[str, str]:
    """Environment of CLI subprocesses in tests: no W&B, one thread each."""
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def run_cli(args: list[str], timeout: float = 300, module: str = "tvlars.train") -> subprocess.CompletedProcess[str]:
    """Run ``python -m tvlars.train ARGS`` in a subprocess from the repo root."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


def foreign_lock(directory: Path, host: str, pid: int, age_s: float = 0.0) -> Path:
    """A lock file (tvlars.lock) as another process would have left in ``directory``, its heartbeat ``age_s`` old."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "theirs", "started": "earlier"}))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path
