"""Two-view augmentations for self-supervised pre-training (Barlow Twins, SimCLR), scaled to the image size.

Built with torchvision.transforms.v2 rather than lightly's transforms: v2 works on the uint8 tensors our
in-memory datasets hold as well as on PIL images, and one code path gives the grayscale variant that
single-channel data (Fashion-MNIST) needs, where colour jitter's saturation/hue and random grayscale do not apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2

from tvlars.data.base import DatasetInfo

# Barlow Twins (Zbontar et al. 2021, as in the paper's code): asymmetric blur and solarisation.
BARLOW_TWINS_VIEWS = ({"blur": 1.0, "solarize": 0.0}, {"blur": 0.1, "solarize": 0.2})
# SimCLR (Chen et al. 2020): symmetric views; no blur on small (≤ 32 px) images, as in SimCLR's CIFAR setting.
SIMCLR_VIEWS = ({"blur": 0.5, "solarize": 0.0}, {"blur": 0.5, "solarize": 0.0})


class TwoViews:
    """``img → (first(img), second(img))``."""

    def __init__(self, first: Callable[[Any], torch.Tensor], second: Callable[[Any], torch.Tensor]) -> None:
        self.first, self.second = first, second

    def __call__(self, img: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.first(img), self.second(img)


def blur_kernel_size(image_size: int) -> int:
    """The views' Gaussian blur kernel: about a tenth of the image side, odd, at least 3."""
    return max(3, (image_size // 10) | 1)


def jitter_strengths(jitter: float, color: bool) -> tuple[float, float, float, float]:
    """ColorJitter's ``(brightness, contrast, saturation, hue)``; brightness and contrast only in one channel."""
    return (jitter, jitter, jitter / 2, jitter / 4) if color else (jitter, jitter, 0.0, 0.0)


def view_transform(info: DatasetInfo, blur: float, solarize: float, min_scale: float = 0.08,
                   jitter: float = 0.4, jitter_prob: float = 0.8, grayscale_prob: float = 0.2) -> v2.Compose:
    """One augmented view: random resized crop, flip, colour jitter, grayscale, Gaussian blur, solarisation.

    On single-channel data the jitter changes brightness and contrast only and random grayscale is dropped.
    The blur kernel is about a tenth of the image side (odd), σ ∈ [0.1, 2].
    """
    size = info.image_size
    color = info.in_channels == 3
    jitter_op = v2.ColorJitter(*jitter_strengths(jitter, color))
    kernel = blur_kernel_size(size)
    steps: list[Any] = [
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=v2.InterpolationMode.BICUBIC,
                             antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([jitter_op], p=jitter_prob),
    ]
    if color and grayscale_prob > 0:
        steps.append(v2.RandomGrayscale(p=grayscale_prob))
    if blur > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur))
    if solarize > 0:
        steps.append(v2.RandomSolarize(threshold=128, p=solarize))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std), v2.ToPureTensor()]
    return v2.Compose(steps)


def view_settings(info: DatasetInfo, method: str) -> tuple[dict[str, float], dict[str, float]]:
    """The ``blur``/``solarize`` probabilities of the two views of ``method`` (``barlow_twins`` or ``simclr``)."""
    if method == "barlow_twins":
        return BARLOW_TWINS_VIEWS
    if method == "simclr":
        first, second = SIMCLR_VIEWS
        if info.image_size <= 32:
            first, second = {**first, "blur": 0.0}, {**second, "blur": 0.0}
        return first, second
    raise ValueError(f"unknown two-view method {method!r} (barlow_twins or simclr)")


def two_view_transform(info: DatasetInfo, method: str, min_scale: float = 0.08) -> TwoViews:
    """The pair of view transforms of ``method`` (``barlow_twins`` or ``simclr``)."""
    first, second = view_settings(info, method)
    return TwoViews(view_transform(info, min_scale=min_scale, **first),
                    view_transform(info, min_scale=min_scale, **second))
