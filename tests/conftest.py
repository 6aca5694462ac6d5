"""Shared fixtures (the helpers they use live in :mod:`tests.helpers`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from tests.helpers import compose_config, tiny

# Tiny models run fastest on one thread, and one thread per test process avoids OpenMP oversubscription.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def private_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The session's temporary directory, for this process and the CLIs it starts (``TMPDIR``): what runs write
    there (decoded image files, tvlars.data.loaders) stays out of the machine's ``/tmp`` and out of other sessions."""
    directory = str(tmp_path_factory.mktemp("tmpdir"))
    previous, tempfile.tempdir = tempfile.tempdir, directory
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", directory)
        yield
    tempfile.tempdir = previous


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``tiny_cfg(*overrides)`` → a composed config of a tiny run writing into ``tmp_path/run``."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(tiny(f"out_dir={tmp_path}", f"run_dir={tmp_path / 'run'}", *overrides))

    return make
