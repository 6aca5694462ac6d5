"""The validation split: a fixed, class-stratified part of the training set held out for tuning, identical for every
run and seed, and fixed random subsets of a split."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from tvlars.data._memory import TensorImageDataset
from tvlars.errors import UserError

SPLIT_SEED = 0  # the one generator seed of every fixed split and subset: never the run's seed


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The labels of a dataset as an int64 tensor, without loading its images (in-memory tensors, ``targets`` of
    torchvision and image-folder datasets, subsets of those)."""
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.int64)]
    if isinstance(dataset, TensorImageDataset):
        return dataset.labels
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].to(torch.int64)
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(f"{type(dataset).__name__} exposes no labels (a `targets` list or a `labels` tensor), so no "
                        "stratified validation split can be drawn from it")
    return torch.as_tensor(targets, dtype=torch.int64)


def _per_class(counts: torch.Tensor, size: int) -> torch.Tensor:
    """How many of each class's items a split of ``size`` items takes: proportional to the class counts, rounded by
    largest remainder (ties to the lower class index), so the total is exactly ``size``."""
    exact = counts.double() * size / counts.sum()
    taken = exact.floor().long()
    remainder = size - int(taken.sum())
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - taken[c]).item(), c))
    for c in order[:remainder]:
        taken[c] += 1
    return taken


def validation_split(train: Dataset, size: int) -> tuple[Dataset, Dataset]:
    """``(train without the validation items, validation items)``: ``size`` items held out class by class
    (proportionally to the class counts), each class's first items of a fixed permutation (:data:`SPLIT_SEED`).
    ``size == 0`` gives ``(train, empty)``."""
    total = len(train)  # type: ignore[arg-type]
    if not 0 <= size < total:
        raise UserError(f"dataset.val_size={size} must be >= 0 and smaller than the training set ({total} images); "
                        "lower dataset.val_size (0: no validation split, the paper's train/test protocol)")
    if size == 0:
        return train, Subset(train, [])
    labels = labels_of(train)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(total, generator=generator)
    shuffled = labels[order]
    counts = torch.bincount(labels)
    held = []
    for label, take in enumerate(_per_class(counts, size).tolist()):
        held.append(order[shuffled == label][:take])
    val = torch.cat(held).sort().values
    keep = torch.ones(total, dtype=torch.bool)
    keep[val] = False
    return Subset(train, keep.nonzero().flatten().tolist()), Subset(train, val.tolist())


def subset(dataset: Any, size: int) -> Any:
    """A fixed random subset of ``size`` items (the same for every seed), or ``dataset`` if ``size`` is 0."""
    if not size or size >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    return Subset(dataset, torch.randperm(len(dataset), generator=generator)[:size].tolist())
