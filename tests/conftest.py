"""Shared fixtures (the helpers they use live in :mod:`tests.helpers`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from tests.helpers import compose_config, tiny

# Tiny models run fastest on one thread, and one thread per test process avoids OpenMP oversubscription.
torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``tiny_cfg(*overrides)`` → a composed config of a tiny run writing into ``tmp_path/run``."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(tiny(f"out_dir={tmp_path}", f"run_dir={tmp_path / 'run'}", *overrides))

    return make
