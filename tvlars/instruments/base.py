"""What the instruments share: measuring without touching training, batches cut into chunks, cross-process means,
and writing a measurement to its JSONL file and the logger."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tvlars import distributed

if TYPE_CHECKING:
    from tvlars.engine import Engine


def split_batch(batch: Any, parts: int) -> list[Any]:
    """``batch`` (a tensor or a nested tuple/list of tensors, e.g. ``((v1, v2), y)``) cut into ``parts`` pieces
    along dim 0, every tensor alike."""
    if isinstance(batch, list | tuple):
        pieces = [split_batch(item, parts) for item in batch]
        return [type(batch)(piece[i] for piece in pieces) for i in range(parts)]
    return list(torch.tensor_split(batch, parts))


def head(batch: Any, size: int) -> Any:
    """The first ``size`` samples of a (nested) batch, every tensor alike."""
    if isinstance(batch, list | tuple):
        return type(batch)(head(item, size) for item in batch)
    return batch[:size]


def batch_size(batch: Any) -> int:
    """The number of samples of a (nested) batch: the length of its first tensor."""
    while isinstance(batch, list | tuple):
        batch = batch[0]
    return int(batch.shape[0])


def optimized_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The parameters the optimizer under test trains, in ``param_groups`` order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def squared_norm(tensors: Sequence[Tensor]) -> Tensor:
    """``Σ_i ‖t_i‖²`` as a float64 device tensor (per-tensor norms fused, squared and summed in float64)."""
    return torch.stack(torch._foreach_norm(list(tensors))).double().square().sum()


def all_reduce_mean(tensors: Sequence[Tensor], world_size: int) -> list[Tensor]:
    """The element-wise mean of ``tensors`` over all processes, in one all-reduce (identity in one process)."""
    if world_size == 1:
        return list(tensors)
    flat = distributed.all_reduce_sum(torch.cat([t.reshape(-1) for t in tensors])) / world_size
    return [piece.view_as(t) for piece, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)]


def measurement(engine: Engine, step: int, values: dict[str, Any]) -> dict[str, Any]:
    """The row of a measurement taken in optimizer step ``step`` (1-based): ``step``, its epoch (1-based, as in
    ``trust.jsonl``), then ``values``."""
    return {"step": step, "epoch": (step - 1) // len(engine.train_loader) + 1, **values}


def publish(engine: Engine, file: str, prefix: str, row: dict[str, Any]) -> None:
    """Append ``row`` to the run's ``file`` (a :class:`~tvlars.records.RunRecords` attribute; rank 0) and log its
    values but ``step`` and ``epoch`` as ``prefix/<key>`` at ``row["step"]``."""
    if engine.records is not None:
        engine.records.append_jsonl(getattr(engine.records, file), [row])
    engine.logger.log({f"{prefix}/{k}": v for k, v in row.items() if k not in ("step", "epoch") and v is not None},
                      step=row["step"])
