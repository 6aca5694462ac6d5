"""The synthetic dataset: deterministic, balanced, the right shapes, and learnable."""

from __future__ import annotations

import pytest
import torch

from tvlars.data import load_synthetic
from tvlars.errors import UserError


def test_deterministic_per_seed() -> None:
    a, b, c = load_synthetic(seed=3), load_synthetic(seed=3), load_synthetic(seed=4)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)


def test_shapes_info_and_balance() -> None:
    bundle = load_synthetic(num_train=130, num_test=40, num_classes=7, channels=1, image_size=16)
    assert bundle.train.images.shape == (130, 1, 16, 16) and bundle.train.images.dtype == torch.uint8
    image, label = bundle.test[0]
    assert image.shape == (1, 16, 16) and isinstance(label, int)
    counts = bundle.train.labels.bincount(minlength=7)
    assert counts.max() - counts.min() <= 1
    info = bundle.info
    assert (info.num_classes, info.in_channels, info.image_size) == (7, 1, 16)
    assert info.mean == (0.5,) and info.std == (0.25,)


def test_learnable_nearest_class_mean() -> None:
    bundle = load_synthetic()
    train, labels = bundle.train.images.flatten(1).float(), bundle.train.labels
    means = torch.stack([train[labels == k].mean(0) for k in range(bundle.info.num_classes)])
    predicted = torch.cdist(bundle.test.images.flatten(1).float(), means).argmin(1)
    accuracy = (predicted == bundle.test.labels).float().mean().item()
    assert accuracy > 0.9  # chance is 0.1


def test_not_trivially_noise_free() -> None:
    bundle = load_synthetic()
    same_class = bundle.train.images[bundle.train.labels == 0][:2].float()
    assert (same_class[0] - same_class[1]).abs().mean() > 10  # samples of a class differ by their noise


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(UserError, match="dataset.num_classes"):
        load_synthetic(num_classes=1)
    with pytest.raises(UserError, match="dataset.noise"):
        load_synthetic(noise=-1.0)
