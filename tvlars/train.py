"""Entry point: ``python -m tvlars.train [group=option ...] [key=value ...]`` (see :mod:`tvlars.cli`).

Nothing in the package imports this module. ``CONFIG_DIR`` and ``build_engine`` stay importable from here for
scripts written against tvlars 0.1 (use :data:`tvlars.config.CONFIG_DIR` and :func:`tvlars.build.build`).
"""

from __future__ import annotations

from omegaconf import DictConfig

from tvlars.build import build
from tvlars.cli import main
from tvlars.config import CONFIG_DIR
from tvlars.data import DatasetInfo
from tvlars.distributed import DistInfo
from tvlars.engine import Engine

__all__ = ["CONFIG_DIR", "build_engine", "main"]


def build_engine(cfg: DictConfig, dist: DistInfo) -> tuple[Engine, DatasetInfo]:
    """``(engine, dataset info)`` of :func:`tvlars.build.build` (the 0.1 interface)."""
    built = build(cfg, dist)
    return built.engine, built.info


if __name__ == "__main__":
    main()
