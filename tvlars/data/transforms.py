"""Classification transforms (torchvision.transforms.v2) and a dataset wrapper that applies them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from tvlars.data.base import DatasetInfo

LARGE_IMAGE_SIZE = 128  # from this size up, images are resized then cropped (ImageNet-style evaluation)


def _resize_size(image_size: int) -> int:
    return int(image_size * 256 / 224)


def _to_normalised_float(info: DatasetInfo) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std), v2.ToPureTensor()]


def classification_transforms(
    info: DatasetInfo,
    crop_padding: int = 4,
    hflip: bool = True,
    rotation: float = 0.0,
    random_resized_crop: bool = False,
) -> tuple[Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor]]:
    """``(train_transform, test_transform)`` for PIL images or ``uint8`` ``C×H×W`` tensors.

    Both return ``float32`` ``C×H×W`` tensors normalised with ``info.mean``/``info.std``. Train:
    ``RandomResizedCrop`` if ``random_resized_crop``, else ``RandomCrop`` with ``crop_padding`` (after an
    evaluation-style resize for large images); then optional horizontal flip and rotation by up to
    ``rotation`` degrees. Test: deterministic (resize + centre crop from ``LARGE_IMAGE_SIZE`` up).
    """
    size = info.image_size
    large = size >= LARGE_IMAGE_SIZE
    train: list[v2.Transform] = [v2.ToImage()]
    if random_resized_crop:
        train.append(v2.RandomResizedCrop(size, antialias=True))
    else:
        if large:
            train.append(v2.Resize(_resize_size(size), antialias=True))
        if crop_padding > 0 or large:
            train.append(v2.RandomCrop(size, padding=crop_padding or None))
    if hflip:
        train.append(v2.RandomHorizontalFlip())
    if rotation > 0:
        train.append(v2.RandomRotation(rotation))
    test: list[v2.Transform] = [v2.ToImage()]
    if large:
        test += [v2.Resize(_resize_size(size), antialias=True), v2.CenterCrop(size)]
    return v2.Compose(train + _to_normalised_float(info)), v2.Compose(test + _to_normalised_float(info))


class TransformedDataset(Dataset):
    """Items ``(transform(image), label)`` over a base dataset of ``(image, label)`` items."""

    def __init__(self, base: Dataset, transform: Callable[[Any], Any]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.base[index]
        return self.transform(image), label
