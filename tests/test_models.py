"""ResNet variants: stems, depths, width, input channels; the MLP."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from tvlars.models import MLP, ResNet


@pytest.mark.parametrize("depth", [18, 34, 50])
@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_shapes(depth: int, stem: str) -> None:
    model = ResNet(depth=depth, num_classes=7, in_channels=1, stem=stem, width=0.125)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    assert model.features(torch.randn(2, 1, 28, 28)).shape == (2, model.num_features)


def test_full_width_imagenet_stem_matches_torchvision_parameter_count() -> None:
    ours = ResNet(depth=18, num_classes=10, stem="imagenet")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in resnet18(num_classes=10).parameters())


def test_cifar_stem_keeps_resolution_imagenet_stem_downsamples() -> None:
    x = torch.randn(1, 3, 32, 32)
    assert ResNet(stem="cifar", width=0.125).stem(x).shape[-1] == 32
    assert ResNet(stem="imagenet", width=0.125).stem(x).shape[-1] == 8


def test_zero_init_residual_zeroes_last_bn_gamma() -> None:
    model = ResNet(depth=18, width=0.125, zero_init_residual=True)
    assert all(torch.all(b.bn2.weight == 0) for stage in model.stages for b in stage)


@pytest.mark.parametrize(("kwargs", "needle"), [({"depth": 20}, "depth"), ({"stem": "x"}, "stem"),
                                                ({"width": 0}, "width")])
def test_invalid(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ResNet(**kwargs)


def test_mlp() -> None:
    model = MLP(num_classes=3, in_channels=2, image_size=4, hidden=(8, 5))
    assert model(torch.randn(6, 2, 4, 4)).shape == (6, 3) and model.num_features == 5
