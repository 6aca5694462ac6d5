"""Entry point: ``python -m tvlars.train [group=option ...] [key=value ...]`` (see :mod:`tvlars.cli`).

The 0.1 interface stays here for scripts written against it (the GPU acceptance script among them): ``CONFIG_DIR``
(now :data:`tvlars.config.CONFIG_DIR`), ``build_engine`` (:func:`tvlars.build.build`), ``run``
(:func:`tvlars.run.run`) and ``DistributedDataParallel``, the class that wraps the model under a process group:
:func:`tvlars.build.wrap_for_training` looks it up here, so a script that replaces it here (to watch the DDP path)
still sees every wrap.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from tvlars.build import build
from tvlars.cli import main
from tvlars.data import DatasetInfo
from tvlars.distributed import DistInfo
from tvlars.engine import Engine
from tvlars.paths import CONFIG_DIR
from tvlars.run import run

__all__ = ["CONFIG_DIR", "DistributedDataParallel", "build_engine", "main", "run"]


def build_engine(cfg: DictConfig, dist: DistInfo) -> tuple[Engine, DatasetInfo]:
    """``(engine, dataset info)`` of :func:`tvlars.build.build` (the 0.1 interface)."""
    built = build(cfg, dist)
    return built.engine, built.info


if __name__ == "__main__":
    main()
