"""A stand-in for the engine's attributes the instruments read, around small models with known curvature."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from tvlars.distributed import DistInfo
from tvlars.loggers import NullLogger


class LeastSquares:
    """Task whose training loss is ``½ mean_i (x_iᵀw − y_i)²`` on a batch ``(x, y)`` (Hessian ``XᵀX/n``)."""

    def training_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        loss = 0.5 * (model(x).squeeze(-1) - y).square().mean()
        return loss, {"loss": loss.detach(), "count": torch.ones(())}


def fake_engine(model: nn.Module, task: Any, batches: list[Any] | None = None, world_size: int = 1,
                rank: int = 0) -> SimpleNamespace:
    """What :mod:`tvlars.instruments` reads from an :class:`~tvlars.engine.Engine`, with SGD on ``model``."""
    return SimpleNamespace(
        model=model, task=task, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        dist=DistInfo(rank, world_size, rank, torch.device("cpu")), device=torch.device("cpu"),
        train_loader=batches or [], opts=SimpleNamespace(seed=0), records=None, logger=NullLogger(),
        _to_device=lambda batch: batch)
