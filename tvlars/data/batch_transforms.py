"""Batched, per-sample-random image augmentations on the batch's device (the device path of the data pipeline).

They replace the per-sample torchvision.transforms.v2 pipelines of :mod:`tvlars.data.transforms` and
:mod:`tvlars.data.ssl_transforms` with the same semantics and distributions, computed in float on ``[0, 1]``
(no ``uint8`` rounding between steps). Our own ops rather than kornia's, because

1. each op is tested to equal torchvision's functional op with the same parameters, so the device path follows
   the sampler path's exact semantics (ColorJitter's per-sample random order, RandomResizedCrop's 10-attempt
   sampling with its fallback, reflect-padded blur);
2. everything is drawn on the device from torch's global RNG (``torch.manual_seed`` reproduces it), with no
   host synchronisation and no per-sample Python loop: per-sample choices are ``torch.where`` selections,
   integer-index gathers, batched matrix products and grouped convolutions;
3. no extra dependency.

Functional ops take float ``N×C×H×W`` batches in ``[0, 1]`` (``random_crop`` and ``hflip`` also ``uint8``);
per-sample parameters are 1-D tensors of length ``N`` on the batch's device. The composites take the ``uint8``
batch and return ``float32`` normalised with the dataset's mean and std.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from tvlars.data.base import DatasetInfo
from tvlars.data.ssl_transforms import TwoViews, blur_kernel_size, jitter_strengths, view_settings
from tvlars.data.transforms import LARGE_IMAGE_SIZE

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def _per_sample(values: Tensor) -> Tensor:
    """A length-``N`` parameter shaped to broadcast over ``N×C×H×W``."""
    return values.view(-1, 1, 1, 1)


def _uniform(n: int, low: float, high: float, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(n, device=device)


def _chosen(n: int, p: float, device: torch.device) -> Tensor:
    """Per-sample Bernoulli(``p``) mask, shaped ``N×1×1×1`` (torchvision applies a random op iff ``rand < p``)."""
    return _per_sample(torch.rand(n, device=device) < p)


def _to_float(images: Tensor) -> Tensor:
    """``uint8`` → ``float32`` on ``[0, 1]`` (as ``v2.ToDtype(torch.float32, scale=True)``); float passes through."""
    return images if images.is_floating_point() else images.to(torch.float32).mul_(1.0 / 255)


# --- geometry ---------------------------------------------------------------------------------------------------------


def random_crop(x: Tensor, padding: int) -> Tensor:
    """Zero-pad by ``padding`` on every side, then crop each sample back to ``H×W`` at a uniform offset in
    ``{0, …, 2·padding}²`` (``v2.RandomCrop(size, padding=padding)``). Any dtype."""
    if padding == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    left = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    rows = (top + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, padded.shape[-1])
    cols = (left + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def hflip(x: Tensor, p: float = 0.5) -> Tensor:
    """Flip each sample horizontally with probability ``p``. Any dtype."""
    return torch.where(_chosen(x.shape[0], p, x.device), x.flip(-1), x)


def rotate_by(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate sample ``i`` by ``degrees[i]`` anticlockwise about the image centre, nearest neighbour, fill 0,
    same size (``v2.functional.rotate(img, angle)``)."""
    n, _, h, w = x.shape
    angle = torch.deg2rad(degrees.to(torch.float32))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output pixel centres relative to the image centre, mapped back into the input by the inverse rotation
    # (y points down, so an anticlockwise turn on screen is x_in = cos·x − sin·y, y_in = sin·x + cos·y).
    ys = torch.arange(h, device=x.device, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2
    yy, xx = ys.view(1, h, 1), xs.view(1, 1, w)
    c, s = cos.view(n, 1, 1), sin.view(n, 1, 1)
    # grid_sample's normalised coordinates (align_corners=False): pixel offset / half the side.
    grid = torch.stack(((c * xx - s * yy) / (w / 2), (s * xx + c * yy) / (h / 2)), dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="nearest", padding_mode="zeros", align_corners=False)


def rotate(x: Tensor, max_degrees: float) -> Tensor:
    """Rotate each sample by an angle ~ U(−``max_degrees``, ``max_degrees``) (``v2.RandomRotation(max_degrees)``)."""
    return rotate_by(x, _uniform(x.shape[0], -max_degrees, max_degrees, x.device))


def rrc_boxes(n: int, height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
              ratio: tuple[float, float] = (3 / 4, 4 / 3),
              device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(top, left, h, w)`` int64 crop boxes of ``v2.RandomResizedCrop``, one per sample.

    As torchvision's sampler: up to 10 attempts (area fraction ~ U(scale), log aspect ~ U(log ratio)); the first
    that fits wins and is placed uniformly; if none fits, the centre crop of the aspect clamped to ``ratio``.
    """
    attempts = 10
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, attempts, device=device))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, attempts, device=device))
    ws = torch.round(torch.sqrt(target * aspect)).long()
    hs = torch.round(torch.sqrt(target / aspect)).long()
    fits = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting attempt (0 if none fits)
    found = fits.any(dim=1)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    w = torch.where(found, ws.gather(1, first).squeeze(1), fallback_w)
    h = torch.where(found, hs.gather(1, first).squeeze(1), fallback_h)
    # Uniform integers in {0, …, side − size}; the minimum guards against rand·k rounding up to k in float32.
    top = torch.minimum((torch.rand(n, device=device) * (height - h + 1)).long(), height - h)
    left = torch.minimum((torch.rand(n, device=device) * (width - w + 1)).long(), width - w)
    top = torch.where(found, top, (height - fallback_h) // 2)
    left = torch.where(found, left, (width - fallback_w) // 2)
    return top, left, h, w


def _triangle(d: Tensor) -> Tensor:
    return (1 - d.abs()).clamp_(min=0)


def _keys_cubic(d: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = −0.5 (PIL's and torch's antialiased bicubic)."""
    a, d = -0.5, d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = (((d - 5) * d + 8) * d - 4) * a
    return torch.where(d < 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


_KERNELS: dict[str, Callable[[Tensor], Tensor]] = {"bilinear": _triangle, "bicubic": _keys_cubic}


def _resample_matrix(start: Tensor, length: Tensor, in_size: int, out_size: int,
                     kernel: Callable[[Tensor], Tensor]) -> Tensor:
    """``N×out×in`` weights that resample ``[start, start + length)`` of each sample's axis to ``out_size`` pixels.

    torch's antialiased interpolation (``_upsample_*_aa``): output pixel ``i`` is centred at
    ``start + scale·(i + ½)`` with ``scale = length / out_size``; the kernel is stretched by ``scale`` when
    downscaling; taps outside the crop are dropped and the weights renormalised to sum to 1.
    """
    scale = (length.to(torch.float32) / out_size).view(-1, 1, 1)
    stretch = scale.clamp(min=1.0)
    centre = start.view(-1, 1, 1) + scale * (torch.arange(out_size, device=start.device) + 0.5).view(1, -1, 1)
    pixels = torch.arange(in_size, device=start.device).view(1, 1, -1)
    weights = kernel((pixels + 0.5 - centre) / stretch)
    inside = (pixels >= start.view(-1, 1, 1)) & (pixels < (start + length).view(-1, 1, 1))
    weights = weights * inside
    return weights / weights.sum(dim=-1, keepdim=True)


def resized_crop(x: Tensor, top: Tensor, left: Tensor, h: Tensor, w: Tensor, size: int,
                 interpolation: Literal["bilinear", "bicubic"] = "bilinear") -> Tensor:
    """Crop box ``(top[i], left[i], h[i], w[i])`` of each sample resampled to ``size×size``, antialiased, clamped to
    ``[0, 1]`` (``v2.functional.resized_crop(..., antialias=True)``; the clamp is what its ``uint8`` path does)."""
    kernel = _KERNELS[interpolation]
    rows = _resample_matrix(top, h, x.shape[-2], size, kernel).to(x.dtype)  # N×size×H
    cols = _resample_matrix(left, w, x.shape[-1], size, kernel).to(x.dtype)  # N×size×W
    return (rows.unsqueeze(1) @ x @ cols.transpose(1, 2).unsqueeze(1)).clamp_(0, 1)


# --- colour -----------------------------------------------------------------------------------------------------------


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma ``N×1×H×W`` of an RGB batch (torchvision's weights)."""
    r, g, b = x.unbind(dim=1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = _per_sample(factor)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``clamp(f·x)`` per sample."""
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with the mean of its grayscale image."""
    gray = rgb_to_grayscale(x) if x.shape[1] == 3 else x
    return _blend(x, gray.mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with its grayscale image; single-channel images are returned unchanged."""
    if x.shape[1] == 1:
        return x
    return _blend(x, rgb_to_grayscale(x), factor)


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r, g, b = x.unbind(dim=1)
    value = x.amax(dim=1)
    spread = value - x.amin(dim=1)
    grey = spread == 0
    safe = torch.where(grey, torch.ones_like(spread), spread)
    saturation = spread / torch.where(grey, torch.ones_like(value), value)
    # Hue in sextants: the max channel decides the sector (ties resolved r, then g, as torchvision does).
    sextant = torch.where(value == r, (g - b) / safe, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return torch.remainder(sextant / 6, 1.0), saturation, value


def _hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    channels = []
    for n in (5, 3, 1):  # r, g, b: v − v·s·clamp(min(k, 4 − k), 0, 1) with k = (n + 6h) mod 6
        k = torch.remainder(n + 6 * hue, 6)
        channels.append(value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(channels, dim=1)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Shift each sample's hue by ``factor`` (in turns, ``[−½, ½]``) in HSV; single-channel images unchanged."""
    if x.shape[1] == 1:
        return x
    hue, saturation, value = _rgb_to_hsv(x)
    return _hsv_to_rgb(torch.remainder(hue + factor.view(-1, 1, 1), 1.0), saturation, value)


def jitter_params(n: int, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0,
                  device: torch.device | str | None = None) -> tuple[Tensor, list[Tensor | None]]:
    """``(order, factors)`` of ``v2.ColorJitter(brightness, contrast, saturation, hue)`` for ``n`` samples.

    ``order`` (``N×4``) holds a uniform random permutation of the op ids 0–3 (brightness, contrast, saturation,
    hue) per sample; ``factors`` the four per-sample factors, ``None`` for an op of strength 0 (skipped).
    """
    order = torch.rand(n, 4, device=device).argsort(dim=1)
    factors: list[Tensor | None] = [
        _uniform(n, max(0.0, 1 - s), 1 + s, device) if s > 0 else None for s in (brightness, contrast, saturation)
    ]
    factors.append(_uniform(n, -hue, hue, device) if hue > 0 else None)
    return order, factors


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def jitter_in_order(x: Tensor, order: Tensor, factors: Sequence[Tensor | None]) -> Tensor:
    """Apply the colour ops of :func:`jitter_params` to each sample in its own order (``ColorJitter.transform``).

    Four rounds; in round ``r`` each op's result is kept for the samples whose ``r``-th op it is.
    """
    present = [(op_id, op, f) for op_id, (op, f) in enumerate(zip(_JITTER_OPS, factors, strict=True)) if f is not None]
    for step in range(4):
        current = order[:, step]
        out = x
        for op_id, op, factor in present:
            out = torch.where(_per_sample(current == op_id), op(x, factor), out)
        x = out
    return x


def color_jitter(x: Tensor, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0, p: float = 1.0) -> Tensor:
    """``v2.RandomApply([v2.ColorJitter(brightness, contrast, saturation, hue)], p)`` per sample: factors
    brightness/contrast/saturation ~ U[max(0, 1 − s), 1 + s], hue ~ U[−h, h], in a per-sample random order."""
    if not any((brightness, contrast, saturation, hue)):
        return x
    jittered = jitter_in_order(x, *jitter_params(x.shape[0], brightness, contrast, saturation, hue, x.device))
    return torch.where(_chosen(x.shape[0], p, x.device), jittered, x)


def random_grayscale(x: Tensor, p: float = 0.1) -> Tensor:
    """Replace each RGB sample by its grayscale image (kept as 3 channels) with probability ``p``."""
    if x.shape[1] == 1:
        return x
    return torch.where(_chosen(x.shape[0], p, x.device), rgb_to_grayscale(x).expand_as(x), x)


def gaussian_blur_by(x: Tensor, kernel_size: int, sigma: Tensor) -> Tensor:
    """Blur sample ``i`` with a ``kernel_size²`` Gaussian of std ``sigma[i]``, reflect padding
    (``v2.functional.gaussian_blur(img, [k, k], [s, s])``); separable, one grouped convolution per axis."""
    n, c, h, w = x.shape
    offsets = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - kernel_size // 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma.to(x.dtype).view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).unsqueeze(1).expand(n, c, kernel_size)
    half = kernel_size // 2
    planes = F.pad(x, (half,) * 4, mode="reflect").reshape(1, n * c, h + 2 * half, w + 2 * half)
    planes = F.conv2d(planes, kernel.reshape(n * c, 1, 1, kernel_size), groups=n * c)
    planes = F.conv2d(planes, kernel.reshape(n * c, 1, kernel_size, 1), groups=n * c)
    return planes.view(n, c, h, w)


def gaussian_blur(x: Tensor, kernel_size: int, sigma: tuple[float, float] = (0.1, 2.0), p: float = 1.0) -> Tensor:
    """``v2.RandomApply([v2.GaussianBlur(kernel_size, sigma)], p)`` per sample: std ~ U(sigma)."""
    blurred = gaussian_blur_by(x, kernel_size, _uniform(x.shape[0], sigma[0], sigma[1], x.device))
    return torch.where(_chosen(x.shape[0], p, x.device), blurred, x)


def random_solarize(x: Tensor, threshold: float = 128 / 255, p: float = 0.5) -> Tensor:
    """Invert the pixels ``≥ threshold`` of each sample with probability ``p`` (``v2.RandomSolarize``; 128/255
    on ``[0, 1]`` is its ``uint8`` threshold 128)."""
    solarized = torch.where(x >= threshold, 1 - x, x)
    return torch.where(_chosen(x.shape[0], p, x.device), solarized, x)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x − mean) / std`` per channel. Python scalars per channel: no host-to-device copy of the statistics."""
    if not len(mean) == len(std) == x.shape[1]:
        raise ValueError(f"{len(mean)} means and {len(std)} stds for {x.shape[1]} channels")
    return torch.stack([(x[:, i] - m) / s for i, (m, s) in enumerate(zip(mean, std, strict=True))], dim=1)


# --- composites -------------------------------------------------------------------------------------------------------


def _check_uint8(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(f"expected a uint8 N×C×H×W batch, got {images.dtype} of shape {tuple(images.shape)}")


def _check_small(info: DatasetInfo) -> None:
    if info.image_size >= LARGE_IMAGE_SIZE:
        raise ValueError(f"batched transforms support images below {LARGE_IMAGE_SIZE} px, not {info.image_size} px "
                         "(those are decoded and resized per sample, ImageNet-style)")


class BatchNormalize:
    """``uint8`` batch → ``float32`` normalised with the dataset statistics: the evaluation transform of images
    below ``LARGE_IMAGE_SIZE`` (larger ones are resized and centre-cropped first: ``ValueError``)."""

    def __init__(self, info: DatasetInfo) -> None:
        _check_small(info)
        self.info = info

    def __call__(self, images: Tensor) -> Tensor:
        _check_uint8(images)
        return normalize(_to_float(images), self.info.mean, self.info.std)


class BatchClassificationAugment:
    """The training transform of :func:`~tvlars.data.transforms.classification_transforms`, batched: random
    resized crop (bilinear) or random crop with zero padding, then horizontal flip, rotation, normalisation.

    Only for images below ``LARGE_IMAGE_SIZE`` (larger ones are resized ImageNet-style first): ``ValueError``.
    """

    def __init__(self, info: DatasetInfo, crop_padding: int = 4, hflip: bool = True, rotation: float = 0.0,
                 random_resized_crop: bool = False) -> None:
        _check_small(info)
        self.info, self.crop_padding, self.flip = info, crop_padding, hflip
        self.rotation, self.random_resized_crop = rotation, random_resized_crop

    def __call__(self, images: Tensor) -> Tensor:
        _check_uint8(images)
        n, _, height, width = images.shape
        if self.random_resized_crop:
            boxes = rrc_boxes(n, height, width, device=images.device)
            x = resized_crop(_to_float(images), *boxes, size=self.info.image_size, interpolation="bilinear")
        else:
            x = random_crop(images, self.crop_padding)  # on uint8: a quarter of the bytes to move
        if self.flip:
            x = hflip(x)
        x = _to_float(x)
        if self.rotation > 0:
            x = rotate(x, self.rotation)
        return normalize(x, self.info.mean, self.info.std)


class BatchView:
    """One SSL view of :func:`~tvlars.data.ssl_transforms.view_transform`, batched: random resized crop (bicubic,
    scale ``(min_scale, 1)``), flip, colour jitter with probability ``jitter_prob``, random grayscale (colour data
    only), Gaussian blur with probability ``blur``, solarisation with probability ``solarize``, normalisation."""

    def __init__(self, info: DatasetInfo, blur: float, solarize: float, min_scale: float = 0.08, jitter: float = 0.4,
                 jitter_prob: float = 0.8, grayscale_prob: float = 0.2) -> None:
        self.info, self.blur, self.solarize, self.min_scale = info, blur, solarize, min_scale
        self.color = info.in_channels == 3
        self.jitter, self.jitter_prob = jitter_strengths(jitter, self.color), jitter_prob
        self.grayscale_prob = grayscale_prob if self.color else 0.0
        self.kernel_size = blur_kernel_size(info.image_size)

    def __call__(self, images: Tensor) -> Tensor:
        _check_uint8(images)
        n, _, height, width = images.shape
        boxes = rrc_boxes(n, height, width, scale=(self.min_scale, 1.0), device=images.device)
        x = resized_crop(_to_float(images), *boxes, size=self.info.image_size, interpolation="bicubic")
        x = hflip(x)
        x = color_jitter(x, *self.jitter, p=self.jitter_prob)
        if self.grayscale_prob > 0:
            x = random_grayscale(x, self.grayscale_prob)
        if self.blur > 0:
            x = gaussian_blur(x, self.kernel_size, (0.1, 2.0), p=self.blur)
        if self.solarize > 0:
            x = random_solarize(x, p=self.solarize)
        return normalize(x, self.info.mean, self.info.std)


def batch_two_view_transform(info: DatasetInfo, method: str, min_scale: float = 0.08) -> TwoViews:
    """The batched pair of views of ``method`` (``barlow_twins`` or ``simclr``), as
    :func:`~tvlars.data.ssl_transforms.two_view_transform`."""
    _check_small(info)
    first, second = view_settings(info, method)
    return TwoViews(BatchView(info, min_scale=min_scale, **first), BatchView(info, min_scale=min_scale, **second))
