"""Supervised classification with cross-entropy; reports loss, top-1 and top-5 accuracy (percent)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from tvlars.data import DataBundle, DatasetInfo, TransformedDataset, classification_transforms
from tvlars.data.batch_transforms import BatchClassificationAugment, BatchNormalize
from tvlars.tasks.base import BatchTransforms, Sums, Task


def topk_correct(logits: Tensor, target: Tensor, k: int) -> Tensor:
    """Number of rows whose ``target`` is among the ``k`` largest logits (``k`` capped at the class count)."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == target[:, None]).any(dim=1).sum()


class Classification(Task):
    metrics = ("train_loss", "train_top1", "test_loss", "test_top1", "test_top5")

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1) (got {label_smoothing})")
        self.label_smoothing = label_smoothing

    def datasets(self, data: DataBundle, augment: dict[str, Any]) -> tuple[Dataset, Dataset]:
        train_tf, test_tf = classification_transforms(data.info, **augment)
        return TransformedDataset(data.train, train_tf), TransformedDataset(data.test, test_tf)

    def batch_transforms(self, info: DatasetInfo, augment: dict[str, Any]) -> BatchTransforms | None:
        return BatchClassificationAugment(info, **augment), BatchNormalize(info)

    def training_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, Sums]:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        n = y.shape[0]
        with torch.no_grad():
            top1 = topk_correct(logits, y, 1) * 100.0
        return loss, {"loss": loss.detach() * n, "top1": top1, "count": n}

    def eval_step(self, model: nn.Module, batch: Any) -> Sums:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        return {"loss": loss, "top1": topk_correct(logits, y, 1) * 100.0,
                "top5": topk_correct(logits, y, 5) * 100.0, "count": y.shape[0]}
