"""Batched device augmentations: each op equals torchvision's functional op with the same parameters, the random
draws follow the sampler path's distributions, the composites follow its pipelines, and nothing syncs the host."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import pytest
import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from tests.nosync import NoHostSync
from tvlars.data import DatasetInfo, classification_transforms
from tvlars.data import batch_transforms as bt
from tvlars.data.ssl_transforms import TwoViews, blur_kernel_size, view_settings, view_transform

CIFAR_LIKE = DatasetInfo("cifar_like", 10, 3, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
GRAY_LIKE = DatasetInfo("gray_like", 10, 1, 28, (0.3,), (0.35,))
IMAGENET_LIKE = DatasetInfo("imagenet_like", 10, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
BILINEAR, BICUBIC = v2.InterpolationMode.BILINEAR, v2.InterpolationMode.BICUBIC


def _floats(n: int, c: int = 3, h: int = 12, w: int = 16, seed: int = 0) -> Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _bytes(n: int, c: int = 3, size: int = 32, seed: int = 0) -> Tensor:
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed)).byte()


def _each(fn: Callable[..., Tensor], x: Tensor, *params: Tensor) -> Tensor:
    """torchvision's ``fn`` applied sample by sample with Python-number parameters."""
    return torch.stack([fn(x[i], *(p[i].item() for p in params)) for i in range(x.shape[0])])


def _rate(mask: Tensor) -> float:
    return mask.float().mean().item()


def _within(rate: float, p: float, n: int) -> bool:
    """``rate`` of ``n`` Bernoulli(p) draws is within 6 standard deviations of ``p`` (cannot flake)."""
    return abs(rate - p) <= 6 * math.sqrt(p * (1 - p) / n) + 1e-9


# --- geometry -----------------------------------------------------------------------------------------------


def test_random_crop_is_a_crop_of_the_zero_padded_image_at_uniform_offsets() -> None:
    n, size, pad = 4000, 16, 4
    position = (torch.arange(size * size, dtype=torch.float32) + 1).view(1, 1, size, size)
    torch.manual_seed(0)
    out = bt.random_crop(position.expand(n, 1, size, size), pad)
    # Output pixel (pad, pad) is input pixel (top, left), which lies inside the image for every offset.
    source = out[:, 0, pad, pad].long() - 1
    top, left = source.div(size, rounding_mode="floor"), source % size
    padded = TF.pad(position[0], [pad] * 4)
    for i in range(50):
        assert torch.equal(out[i], TF.crop(padded, int(top[i]), int(left[i]), size, size))
    counts = torch.bincount(top * (2 * pad + 1) + left, minlength=(2 * pad + 1) ** 2)
    assert counts.numel() == 81 and counts.min() >= 15 and counts.max() <= 95  # expected 49.4 each


def test_random_crop_keeps_uint8_and_padding_0_is_identity() -> None:
    images = _bytes(8)
    torch.manual_seed(3)
    cropped = bt.random_crop(images, 4)
    torch.manual_seed(3)
    assert cropped.dtype == torch.uint8 and torch.equal(cropped.float(), bt.random_crop(images.float(), 4))
    assert not torch.equal(cropped, images)
    assert torch.equal(bt.random_crop(images, 0), images)


def test_hflip_probability() -> None:
    x = torch.tensor([0.0, 1.0]).expand(4000, 1, 1, 2)
    assert torch.equal(bt.hflip(x, p=0.0), x) and torch.equal(bt.hflip(x, p=1.0), x.flip(-1))
    torch.manual_seed(0)
    out = bt.hflip(x)
    assert _within(_rate(out[:, 0, 0, 0] == 1), 0.5, 4000)
    images = _bytes(4)
    assert torch.equal(bt.hflip(images, p=1.0), TF.horizontal_flip(images))


@pytest.mark.parametrize("angle", [90.0, -90.0, 180.0, 270.0])
def test_rotate_by_quarter_turns_matches_torchvision(angle: float) -> None:
    square, wide = _floats(4, h=10, w=10), _floats(4, h=10, w=14)
    turned = bt.rotate_by(square, torch.full((4,), angle))
    assert torch.equal(turned, torch.rot90(square, k=round(angle / 90) % 4, dims=(-2, -1)))
    assert torch.equal(turned, TF.rotate(square, angle))
    assert torch.equal(bt.rotate_by(wide, torch.full((4,), angle)), TF.rotate(wide, angle))  # affine path


def test_rotate_by_random_angles_matches_torchvision() -> None:
    x = _floats(40, h=12, w=16)
    angles = torch.empty(40).uniform_(-180, 180, generator=torch.Generator().manual_seed(1))
    agree = bt.rotate_by(x, angles) == _each(TF.rotate, x, angles)
    assert _rate(agree) >= 0.97  # nearest neighbour: only float ties at half-pixel positions may differ


def _polar_image(size: int = 41) -> tuple[Tensor, Tensor]:
    """An image whose pixels hold their polar angle (anticlockwise on screen), and the ring to read it on."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    y, x = offsets.view(-1, 1), offsets.view(1, -1)
    radius = (x**2 + y**2).sqrt()
    return torch.atan2(-y, x).expand(1, 1, size, size), (radius >= 12) & (radius <= 19)


def _estimated_angles(rotated: Tensor, image: Tensor, ring: Tensor) -> Tensor:
    """Each sample's rotation in degrees: the median over the ring of (original − rotated) polar angle."""
    diff = torch.remainder(image - rotated + math.pi, 2 * math.pi) - math.pi
    return torch.rad2deg(diff[:, 0][:, ring].median(dim=1).values)


def test_rotate_draws_per_sample_angles_within_range() -> None:
    image, ring = _polar_image()
    known = torch.tensor([17.0, -40.0])
    estimate = _estimated_angles(bt.rotate_by(image.expand(2, -1, -1, -1), known), image, ring)
    assert (estimate - known).abs().max() < 1.0  # the estimator works
    torch.manual_seed(0)
    angles = _estimated_angles(bt.rotate(image.expand(500, -1, -1, -1), 30.0), image, ring)
    assert angles.abs().max() <= 31.0 and angles.max() >= 27.0 and angles.min() <= -27.0
    assert abs(angles.mean().item()) < 4.0 and angles.round().unique().numel() >= 40


def test_rrc_boxes_respect_bounds_and_cover_the_image() -> None:
    torch.manual_seed(0)
    height, width, n = 24, 40, 4000
    top, left, h, w = bt.rrc_boxes(n, height, width)
    assert all(t.dtype == torch.int64 and t.shape == (n,) for t in (top, left, h, w))
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    assert (top == 0).any() and (top + h == height).any() and (left == 0).any() and (left + w == width).any()
    area = (h * w).float() / (height * width)
    # The widest aspect, 4/3, caps the area at 32×24, 0.8 of this 40×24 image (rounding can add a little).
    assert area.min() >= 0.06 and area.max() <= 0.85 and area.min() < 0.1 and area.max() > 0.75
    assert (torch.stack((top, left, h, w), 1).unique(dim=0).shape[0]) > n // 2  # per-sample boxes


def _box_features(boxes: Tensor) -> Tensor:
    """``top, left, h, w, log(w / h), [w > h]`` of ``N×4`` boxes."""
    aspect = boxes[:, 3:] / boxes[:, 2:3]
    return torch.cat((boxes, aspect.log(), (aspect > 1).float()), dim=1)


@pytest.mark.parametrize(("height", "width", "scale", "ratio"), [
    (10, 40, (0.08, 1.0), (3 / 4, 4 / 3)),  # about 14 % of samples exhaust the 10 attempts and fall back
    (64, 64, (0.05, 0.3), (1 / 4, 4.0)),  # log-uniform aspect: half the boxes are wider than high
])
def test_rrc_boxes_have_torchvisions_distribution(height: int, width: int, scale: tuple[float, float],
                                                  ratio: tuple[float, float]) -> None:
    n = 3000
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(8, scale=scale, ratio=ratio)
    params = [crop.make_params([torch.zeros(1, height, width)]) for _ in range(n)]
    ref = _box_features(torch.tensor([[p["top"], p["left"], p["height"], p["width"]] for p in params]).float())
    ours = _box_features(torch.stack(bt.rrc_boxes(n, height, width, scale, ratio), dim=1).float())
    # The fallback of the wide image: full height, the aspect clamped to 4/3, centred.
    fallback = torch.tensor([0, 13, 10, 13])
    ref_rate, our_rate = _rate((ref[:, :4] == fallback).all(1)), _rate((ours[:, :4] == fallback).all(1))
    assert (0.05 < ref_rate < 0.25) == (height == 10)
    assert abs(our_rate - ref_rate) <= 6 * math.sqrt(2 * ref_rate / n)
    tolerance = 5 * ((ref.var(0) + ours.var(0)) / n).sqrt()
    assert ((ours.mean(0) - ref.mean(0)).abs() <= tolerance).all(), (ours.mean(0), ref.mean(0))


@pytest.mark.parametrize(("height", "width", "ratio"),
                         [(20, 20, (2.0, 3.0)), (10, 40, (0.5, 0.75)), (40, 10, (1.5, 3.0)), (12, 14, (0.5, 2.0))])
def test_rrc_boxes_fallback_is_torchvisions_centre_crop(height: int, width: int, ratio: tuple[float, float]) -> None:
    scale = (1.5, 2.0)  # no attempt can fit
    ref = v2.RandomResizedCrop(8, scale=scale, ratio=ratio).make_params([torch.zeros(1, height, width)])
    boxes = torch.stack(bt.rrc_boxes(5, height, width, scale=scale, ratio=ratio), dim=1)
    assert (boxes == torch.tensor([ref["top"], ref["left"], ref["height"], ref["width"]])).all()


def test_rrc_boxes_are_reproducible() -> None:
    torch.manual_seed(7)
    first = bt.rrc_boxes(100, 32, 32)
    torch.manual_seed(7)
    assert all(torch.equal(a, b) for a, b in zip(first, bt.rrc_boxes(100, 32, 32), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, bt.rrc_boxes(100, 32, 32), strict=True))


@pytest.mark.parametrize(("interpolation", "mode"), [("bilinear", BILINEAR), ("bicubic", BICUBIC)])
@pytest.mark.parametrize("channels", [1, 3])
def test_resized_crop_matches_torchvision(interpolation: Literal["bilinear", "bicubic"], mode: v2.InterpolationMode,
                                          channels: int) -> None:
    x = _floats(40, c=channels, h=20, w=28)
    torch.manual_seed(0)
    top, left, h, w = bt.rrc_boxes(40, 20, 28, scale=(0.02, 1.0))
    # Hand-picked boxes too: the whole image, a 16×16 crop (no resampling at size 16), a one-pixel-high strip.
    for i, box in enumerate([(0, 0, 20, 28), (2, 5, 16, 16), (7, 3, 1, 25)]):
        top[i], left[i], h[i], w[i] = box
    for size in (16, 40):  # mostly down- and mostly upsampling
        ours = bt.resized_crop(x, top, left, h, w, size, interpolation)
        ref = torch.stack([TF.resized_crop(x[i], int(top[i]), int(left[i]), int(h[i]), int(w[i]), [size, size], mode,
                                           antialias=True) for i in range(40)]).clamp(0, 1)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
        movable = top + h < 20
        shifted = bt.resized_crop(x, top + movable.long(), left, h, w, size, interpolation)
        assert (shifted - ref).abs().amax(dim=(1, 2, 3))[movable].min() > 1e-3  # an off-by-one box fails
    assert torch.equal(bt.resized_crop(x, top, left, h, w, 16, interpolation)[1], x[1, :, 2:18, 5:21])


# --- colour -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "hue"])
@pytest.mark.parametrize("channels", [1, 3])
def test_colour_adjustments_match_torchvision(name: str, channels: int) -> None:
    x = _floats(24, c=channels, h=6, w=8)
    factors = torch.linspace(-0.5, 0.5, 24) if name == "hue" else torch.linspace(0.0, 2.0, 24)
    ours = getattr(bt, f"adjust_{name}")(x, factors)
    torch.testing.assert_close(ours, _each(getattr(TF, f"adjust_{name}"), x, factors), rtol=0, atol=2e-6)
    if channels == 1 and name in ("saturation", "hue"):
        assert torch.equal(ours, x)  # as torchvision (and PIL): no colour to change
    else:
        assert not torch.allclose(ours, x)


@pytest.mark.parametrize("channels", [1, 3])
def test_colour_ops_on_constant_images_keep_them_and_give_no_nan(channels: int) -> None:
    grey = torch.tensor([0.0, 0.3, 1.0]).view(3, 1, 1, 1).expand(3, channels, 5, 5)
    factors = torch.tensor([0.0, 0.7, 2.0])
    for op in (bt.adjust_contrast, bt.adjust_saturation):
        torch.testing.assert_close(op(grey, factors), grey)
    torch.testing.assert_close(bt.adjust_hue(grey, torch.tensor([-0.5, 0.1, 0.5])), grey)
    colour = torch.tensor([0.9, 0.2, 0.0])[:channels].view(1, channels, 1, 1).expand(3, channels, 5, 5)
    torch.testing.assert_close(bt.adjust_contrast(colour, torch.ones(3)), colour)
    torch.manual_seed(0)
    for x in (grey, colour):
        out = bt.color_jitter(x, 0.4, 0.4, 0.2, 0.1)
        assert torch.isfinite(out).all() and (out[:, :, :1, :1] == out).all()  # still constant


def test_jitter_params_draw_uniform_orders_and_factors() -> None:
    torch.manual_seed(0)
    n = 4800
    order, (b, c, s, h) = bt.jitter_params(n, brightness=0.4, contrast=1.5, hue=0.1)
    assert s is None and b is not None and c is not None and h is not None
    assert (order.sort(dim=1).values == torch.arange(4)).all()  # permutations
    codes = (order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.unique(codes, return_counts=True)[1]
    assert counts.numel() == 24 and counts.min() >= 120 and counts.max() <= 290  # expected 200 each
    for factor, low, high in ((b, 0.6, 1.4), (c, 0.0, 2.5), (h, -0.1, 0.1)):
        margin = 0.02 * (high - low)
        assert factor.min() >= low and factor.max() <= high
        assert factor.min() < low + margin and factor.max() > high - margin
        assert abs(factor.mean().item() - (low + high) / 2) < 3 * margin


@pytest.mark.parametrize("channels", [1, 3])
def test_jitter_in_order_matches_torchvision_color_jitter(channels: int) -> None:
    x = _floats(48, c=channels, h=6, w=8)
    torch.manual_seed(0)
    order, factors = bt.jitter_params(48, 0.4, 0.4, 0.2, 0.1)
    ours = bt.jitter_in_order(x, order, factors)
    jitter = v2.ColorJitter(0.4, 0.4, 0.2, 0.1)
    names = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
    for i in range(48):
        params = {"fn_idx": order[i], **{k: f[i].item() for k, f in zip(names, factors, strict=True)}}
        torch.testing.assert_close(ours[i], jitter.transform(x[i], params), rtol=0, atol=2e-6)
    assert len({tuple(o) for o in order.tolist()}) > 12  # per-sample orders


def test_color_jitter_probability_and_brightness_factors() -> None:
    x = _floats(4000, c=3, h=1, w=2) * 0.5  # no clamping at brightness ≤ 1.4
    assert torch.equal(bt.color_jitter(x, 0.4, 0.4, 0.2, 0.1, p=0.0), x)
    assert torch.equal(bt.color_jitter(x, p=1.0), x)  # all strengths 0: nothing to do
    torch.manual_seed(0)
    ratio = bt.color_jitter(x, brightness=0.4, p=1.0) / x
    assert (ratio.amax(dim=(1, 2, 3)) - ratio.amin(dim=(1, 2, 3))).max() < 1e-4  # one factor per sample
    factor = ratio[:, 0, 0, 0]
    assert factor.min() >= 0.6 - 1e-6 and factor.max() <= 1.4 + 1e-6 and factor.std() > 0.2
    changed = (bt.color_jitter(x, brightness=0.4, p=0.3) != x).flatten(1).any(1)
    assert _within(_rate(changed), 0.3, 4000)


def test_random_grayscale() -> None:
    x = _floats(4000, h=1, w=2)
    gray = bt.random_grayscale(x, p=1.0)
    assert gray.shape == x.shape and torch.allclose(gray, TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-6)
    assert torch.equal(bt.random_grayscale(x, p=0.0), x)
    torch.manual_seed(0)
    out = bt.random_grayscale(x, p=0.2)
    is_gray = (out == gray).flatten(1).all(1)
    assert (is_gray | (out == x).flatten(1).all(1)).all() and _within(_rate(is_gray), 0.2, 4000)
    single = _floats(4, c=1)
    assert torch.equal(bt.random_grayscale(single, p=1.0), single)


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_gaussian_blur_by_matches_torchvision(kernel_size: int) -> None:
    x = _floats(12, h=12, w=16)
    sigma = torch.linspace(0.1, 2.0, 12)
    ref = torch.stack([TF.gaussian_blur(x[i], [kernel_size] * 2, [sigma[i].item()] * 2) for i in range(12)])
    torch.testing.assert_close(bt.gaussian_blur_by(x, kernel_size, sigma), ref, rtol=0, atol=2e-6)


def test_gaussian_blur_draws_sigma_per_sample_in_range() -> None:
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[..., 4, 4] = 1.0
    assert torch.equal(bt.gaussian_blur(impulse.expand(8, 1, 9, 9), 5, p=0.0), impulse.expand(8, 1, 9, 9))

    def peak(sigma: float) -> float:  # the centre value falls as sigma grows
        return bt.gaussian_blur_by(impulse, 5, torch.tensor([sigma]))[0, 0, 4, 4].item()

    torch.manual_seed(0)
    peaks = bt.gaussian_blur(impulse.expand(500, 1, 9, 9), 5, sigma=(0.5, 1.5), p=1.0)[:, 0, 4, 4]
    assert peaks.min() >= peak(1.5) - 1e-6 and peaks.max() <= peak(0.5) + 1e-6
    assert peaks.min() < peak(1.45) and peaks.max() > peak(0.55) and peaks.unique().numel() > 400
    changed = (bt.gaussian_blur(impulse.expand(4000, 1, 9, 9), 5, p=0.5) != impulse).flatten(1).any(1)
    assert _within(_rate(changed), 0.5, 4000)


def test_random_solarize() -> None:
    images = _bytes(16, size=8)
    x = images.float() / 255
    solar = bt.random_solarize(x, p=1.0)
    assert torch.equal(solar, TF.solarize(x, 128 / 255))
    assert torch.equal((solar * 255).round().byte(), TF.solarize(images, 128))  # = the uint8 pipeline's threshold
    assert torch.equal(bt.random_solarize(x, p=0.0), x)
    torch.manual_seed(0)
    many = _floats(4000, h=1, w=2)
    changed = (bt.random_solarize(many, p=0.2) != many).flatten(1).any(1)
    assert _within(_rate(changed), 0.2 * _rate((many >= 128 / 255).flatten(1).any(1)), 4000)


def test_normalize_matches_torchvision() -> None:
    x = _floats(4)
    torch.testing.assert_close(bt.normalize(x, CIFAR_LIKE.mean, CIFAR_LIKE.std),
                               TF.normalize(x, list(CIFAR_LIKE.mean), list(CIFAR_LIKE.std)))
    with pytest.raises(ValueError, match="channels"):
        bt.normalize(x, GRAY_LIKE.mean, GRAY_LIKE.std)


# --- composites ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("info", [CIFAR_LIKE, GRAY_LIKE])
def test_batch_normalize_equals_the_test_transform(info: DatasetInfo) -> None:
    images = _bytes(6, c=info.in_channels, size=info.image_size)
    _, test = classification_transforms(info)
    out = bt.BatchNormalize(info)(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out, torch.stack([test(image) for image in images]))
    with pytest.raises(TypeError):
        bt.BatchNormalize(info)(images.float())


@pytest.mark.parametrize("make", [bt.BatchClassificationAugment, bt.BatchNormalize,
                                  lambda info: bt.batch_two_view_transform(info, "barlow_twins")])
def test_batched_transforms_reject_large_images(make: Callable[[DatasetInfo], Any]) -> None:
    with pytest.raises(ValueError, match="224"):
        make(IMAGENET_LIKE)


def test_classification_augment_is_a_padded_crop_maybe_flipped() -> None:
    images = _bytes(16, size=12)
    info = DatasetInfo("tiny", 10, 3, 12, CIFAR_LIKE.mean, CIFAR_LIKE.std)
    torch.manual_seed(0)
    out = bt.BatchClassificationAugment(info, crop_padding=2)(images)
    normalise = bt.BatchNormalize(info)
    padded = TF.pad(images, [2] * 4)
    candidates = torch.stack([normalise(c) for t in range(5) for left in range(5)
                              for c in (padded[..., t:t + 12, left:left + 12],
                                        padded[..., t:t + 12, left:left + 12].flip(-1))])  # 50×N×C×H×W
    matches = (candidates == out).flatten(2).all(2)
    assert (matches.sum(0) == 1).all()  # each sample is exactly one crop/flip of its padded image
    assert matches.any(1).sum() > 10  # and they differ between samples


@pytest.mark.parametrize("info", [CIFAR_LIKE, GRAY_LIKE])
def test_classification_augment_without_options_is_normalisation(info: DatasetInfo) -> None:
    images = _bytes(4, c=info.in_channels, size=info.image_size)
    augment = bt.BatchClassificationAugment(info, crop_padding=0, hflip=False)
    assert torch.equal(augment(images), bt.BatchNormalize(info)(images))


def _assert_same_distribution(ours: Tensor, theirs: Tensor) -> None:
    """Per-image channel means and standard deviations agree on average within 5 standard errors."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.float32
    assert torch.isfinite(ours).all()
    for statistic in (torch.mean, torch.std):
        a, b = statistic(ours, dim=(2, 3)), statistic(theirs, dim=(2, 3))  # N×C
        error = ((a.var(0) + b.var(0)) / a.shape[0]).sqrt()
        assert ((a.mean(0) - b.mean(0)).abs() <= 5 * error + 1e-3).all(), (statistic.__name__, a.mean(0), b.mean(0))


@pytest.mark.parametrize("info", [CIFAR_LIKE, GRAY_LIKE])
@pytest.mark.parametrize("options", [{}, {"rotation": 30.0}, {"random_resized_crop": True, "hflip": False}])
def test_classification_augment_follows_the_sampler_pipeline(info: DatasetInfo, options: dict[str, Any]) -> None:
    images = _bytes(256, c=info.in_channels, size=info.image_size, seed=1)
    images = (images.float() * torch.linspace(0.2, 1.0, info.image_size)).byte()  # structure for crops to change
    train, _ = classification_transforms(info, **options)
    torch.manual_seed(0)
    ours = bt.BatchClassificationAugment(info, **options)(images)
    theirs = torch.stack([train(image) for image in images])
    _assert_same_distribution(ours, theirs)
    assert not torch.equal(ours, bt.BatchNormalize(info)(images))


def test_composites_work_on_a_batch_of_one_and_are_reproducible() -> None:
    images = _bytes(1)

    def run(transform: Callable[[Tensor], Any], seed: int) -> Tensor:
        torch.manual_seed(seed)
        out = transform(images)
        return torch.cat(out) if isinstance(out, tuple) else out

    for transform in (bt.BatchClassificationAugment(CIFAR_LIKE, rotation=10.0),
                      bt.batch_two_view_transform(CIFAR_LIKE, "barlow_twins")):
        first = run(transform, 5)
        assert first.shape[1:] == (3, 32, 32) and first.dtype == torch.float32
        assert torch.equal(first, run(transform, 5)) and not torch.equal(first, run(transform, 6))


@pytest.mark.parametrize("method", ["barlow_twins", "simclr"])
@pytest.mark.parametrize("info", [CIFAR_LIKE, GRAY_LIKE])
def test_two_views_use_the_method_settings_and_differ(method: str, info: DatasetInfo) -> None:
    transform = bt.batch_two_view_transform(info, method, min_scale=0.2)
    for view, settings in zip((transform.first, transform.second), view_settings(info, method), strict=True):
        assert isinstance(view, bt.BatchView)
        assert (view.blur, view.solarize, view.min_scale) == (settings["blur"], settings["solarize"], 0.2)
        assert view.kernel_size == blur_kernel_size(info.image_size)
    images = _bytes(8, c=info.in_channels, size=info.image_size)
    v1, v2_ = transform(images)
    assert v1.shape == v2_.shape == images.shape and v1.dtype == v2_.dtype == torch.float32
    assert not torch.allclose(v1, v2_)
    with pytest.raises(ValueError, match="unknown"):
        bt.batch_two_view_transform(info, "byol")


@pytest.mark.parametrize(("info", "settings"), [
    (CIFAR_LIKE, {"blur": 0.0, "solarize": 0.0}),
    (CIFAR_LIKE, {"blur": 0.5, "solarize": 0.2}),
    (GRAY_LIKE, {"blur": 1.0, "solarize": 0.2}),
])
def test_view_follows_the_sampler_pipeline(info: DatasetInfo, settings: dict[str, float]) -> None:
    images = _bytes(256, c=info.in_channels, size=info.image_size, seed=2)
    images = (images.float() * torch.linspace(0.2, 1.0, info.image_size)).byte()
    torch.manual_seed(0)
    ours = bt.BatchView(info, **settings)(images)
    sampler = view_transform(info, **settings)
    theirs = torch.stack([sampler(image) for image in images])
    _assert_same_distribution(ours, theirs)


@pytest.mark.parametrize("info", [CIFAR_LIKE, GRAY_LIKE])
def test_view_is_the_functional_ops_in_the_pipeline_order(info: DatasetInfo) -> None:
    """Replaying the seed through the documented ops in ``view_transform``'s order gives the same batch."""
    images, size, color = _bytes(16, c=info.in_channels, size=info.image_size), info.image_size, info.in_channels == 3
    torch.manual_seed(0)
    out = bt.BatchView(info, blur=0.5, solarize=0.2, min_scale=0.3)(images)
    torch.manual_seed(0)
    x = bt.resized_crop(images.float() / 255, *bt.rrc_boxes(16, size, size, scale=(0.3, 1.0)), size, "bicubic")
    x = bt.hflip(x, 0.5)
    x = bt.color_jitter(x, 0.4, 0.4, 0.2, 0.1, p=0.8) if color else bt.color_jitter(x, 0.4, 0.4, p=0.8)
    x = bt.random_grayscale(x, 0.2) if color else x
    x = bt.random_solarize(bt.gaussian_blur(x, blur_kernel_size(size), (0.1, 2.0), p=0.5), 128 / 255, p=0.2)
    torch.testing.assert_close(out, bt.normalize(x, info.mean, info.std))


def test_classification_augment_is_the_functional_ops_in_the_pipeline_order() -> None:
    images = _bytes(16)
    torch.manual_seed(0)
    out = bt.BatchClassificationAugment(CIFAR_LIKE, rotation=20.0, random_resized_crop=True)(images)
    torch.manual_seed(0)
    x = bt.resized_crop(images.float() / 255, *bt.rrc_boxes(16, 32, 32), 32, "bilinear")
    x = bt.rotate(bt.hflip(x, 0.5), 20.0)
    torch.testing.assert_close(out, bt.normalize(x, CIFAR_LIKE.mean, CIFAR_LIKE.std))


def test_view_grayscale_rate() -> None:
    info = DatasetInfo("tiny", 10, 3, 8, CIFAR_LIKE.mean, CIFAR_LIKE.std)
    torch.manual_seed(0)
    out = bt.BatchView(info, blur=0.5, solarize=0.2, grayscale_prob=0.2)(_bytes(4000, size=8))
    unnormalised = out * torch.tensor(info.std).view(1, 3, 1, 1) + torch.tensor(info.mean).view(1, 3, 1, 1)
    is_gray = (unnormalised.amax(1) - unnormalised.amin(1)).amax(dim=(1, 2)) < 1e-5
    assert _within(_rate(is_gray), 0.2, 4000)


# --- no host synchronisation --------------------------------------------------------------------------------

def test_composites_do_not_sync_with_the_host() -> None:
    transforms = [bt.BatchNormalize(CIFAR_LIKE), bt.BatchClassificationAugment(CIFAR_LIKE, rotation=15.0),
                  bt.BatchClassificationAugment(CIFAR_LIKE, random_resized_crop=True),
                  bt.batch_two_view_transform(CIFAR_LIKE, "barlow_twins"),
                  bt.batch_two_view_transform(GRAY_LIKE, "simclr")]
    for transform in transforms:
        info = transform.first.info if isinstance(transform, TwoViews) else transform.info
        images = _bytes(4, c=info.in_channels, size=info.image_size)
        with NoHostSync(factories=False):  # fills are allowed: they are not syncs
            transform(images)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_composites_do_not_sync_on_cuda() -> None:
    images = _bytes(64).cuda()
    transforms = [bt.BatchClassificationAugment(CIFAR_LIKE, rotation=15.0),
                  bt.BatchClassificationAugment(CIFAR_LIKE, random_resized_crop=True),
                  bt.batch_two_view_transform(CIFAR_LIKE, "barlow_twins")]
    for transform in transforms:
        transform(images)  # warm-up: one-time initialisation may synchronise
    torch.cuda.set_sync_debug_mode("error")
    try:
        for transform in transforms:
            transform(images)
    finally:
        torch.cuda.set_sync_debug_mode("default")
