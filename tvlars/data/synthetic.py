"""A small, learnable, fully deterministic in-memory image dataset for smoke tests and CPU runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tvlars.data._memory import TensorImageDataset
from tvlars.data.base import DataBundle, DatasetInfo
from tvlars.data.registry import register_dataset
from tvlars.errors import UserError

_PATTERN_CONTRAST = 0.2  # std of each class pattern around mid-grey, on the [0, 1] scale


def _class_patterns(num_classes: int, channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """One smooth random image per class: low-resolution noise upsampled bilinearly, around mid-grey."""
    low = max(2, size // 8)
    coarse = torch.randn(num_classes, channels, low, low, generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    smooth = smooth / smooth.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    return 0.5 + _PATTERN_CONTRAST * smooth


def _sample(patterns: torch.Tensor, n: int, noise: float, generator: torch.Generator) -> TensorImageDataset:
    num_classes = len(patterns)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
    images = patterns[labels] + noise * torch.randn(n, *patterns.shape[1:], generator=generator)
    images = (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return TensorImageDataset(images, labels)


def write_fake_synthetic(root: Path, n_train: int, n_test: int) -> dict[str, Any]:
    """Nothing to write (the data are generated in memory): the keys that make the loader generate that many."""
    return {"num_train": n_train, "num_test": n_test}


@register_dataset("synthetic", train_size="num_train", write_fake=write_fake_synthetic,
                  image=("channels", "image_size"))
def load_synthetic(
    num_train: int = 2048,
    num_test: int = 512,
    num_classes: int = 10,
    channels: int = 3,
    image_size: int = 32,
    noise: float = 0.35,
    seed: int = 0,
) -> DataBundle:
    """Per class a fixed smooth random pattern; a sample is its class pattern plus Gaussian pixel noise.

    Images are ``uint8`` ``channels×image_size×image_size`` (``.images``/``.labels`` exposed); classes are
    balanced (counts differ by at most one). The same ``seed`` gives identical data.
    """
    for key, value, minimum in (
        ("num_train", num_train, 1),
        ("num_test", num_test, 1),
        ("num_classes", num_classes, 2),
        ("channels", channels, 1),
        ("image_size", image_size, 4),
    ):
        if value < minimum:
            raise UserError(f"dataset.{key}={value} must be at least {minimum}")
    if noise < 0:
        raise UserError(f"dataset.noise={noise} must be non-negative")
    generator = torch.Generator().manual_seed(seed)
    patterns = _class_patterns(num_classes, channels, image_size, generator)
    train = _sample(patterns, num_train, noise, generator)
    test = _sample(patterns, num_test, noise, generator)
    info = DatasetInfo(
        name="synthetic",
        num_classes=num_classes,
        in_channels=channels,
        image_size=image_size,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )
    return DataBundle(train=train, test=test, info=info)
