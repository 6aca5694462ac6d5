"""Entry point: ``python -m tvlars.train [group=option ...] [key=value ...]`` (see :mod:`tvlars.cli`).

Nothing in the package imports it. It keeps the names of tvlars 0.1 for scripts written against that version
(docs/running.md#names-kept-for-scripts-written-against-01): ``CONFIG_DIR``, ``run``, ``build_engine`` and
``DistributedDataParallel``, which reads and replaces :data:`tvlars.distributed.ddp_wrapper`, the class every later
build wraps a model of a process group in.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

from omegaconf import DictConfig
from torch import nn

from tvlars import distributed
from tvlars.build import build
from tvlars.cli import main
from tvlars.data import DatasetInfo
from tvlars.distributed import DistInfo
from tvlars.engine import Engine
from tvlars.paths import CONFIG_DIR
from tvlars.run import run

__all__ = ["CONFIG_DIR", "DistributedDataParallel", "build_engine", "main", "run"]  # noqa: F822 - see _Module


def build_engine(cfg: DictConfig, dist: DistInfo) -> tuple[Engine, DatasetInfo]:
    """``(engine, dataset info)`` of :func:`tvlars.build.build` (the 0.1 interface)."""
    built = build(cfg, dist)
    return built.engine, built.info


class _Module(types.ModuleType):
    """This module, whose ``DistributedDataParallel`` is :data:`tvlars.distributed.ddp_wrapper`: assigning it here
    reaches the build."""

    @property
    def DistributedDataParallel(self) -> Callable[..., nn.Module]:  # noqa: N802 - the 0.1 name
        return distributed.ddp_wrapper

    @DistributedDataParallel.setter
    def DistributedDataParallel(self, wrapper: Callable[..., nn.Module]) -> None:  # noqa: N802
        distributed.ddp_wrapper = wrapper


sys.modules[__name__].__class__ = _Module

if __name__ == "__main__":
    main()
