"""Every optimizer preset lowers the loss of a small BN conv net on real Fashion-MNIST images."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig
from torch import nn

from tests.optim.optim_cases import PRESETS, tiny_bn_net, train_step
from tvlars.config import instantiate_node, resolved_lr
from tvlars.data.fashion_mnist import load_fashion_mnist
from tvlars.optim import param_groups

N_IMAGES, BATCH, EPOCHS = 2048, 256, 6
# Base LRs for 48 steps of a tiny net (the presets' defaults target full runs): the LARS family moves each
# weight by about lr·η per step, LAMB by about lr relative to ‖w‖. CDAT's lr is a cap; σ = 1, its greedy step
# (σ = 2 is too aggressive with mini-batches, docs/optimizers.md).
PRESET_OVERRIDES = {
    **{preset: ["optimizer.lr=2.0"] for preset in ("lars", "tvlars", "tvlars_official")},
    **{preset: ["optimizer.lr=0.02"] for preset in ("lamb", "lamb_official", "lambc")},
    "sgd": ["optimizer.lr=0.1"], "adamw": ["optimizer.lr=1e-2"], "cdat": ["optimizer.sigma=1.0"],
}


def test_every_preset_is_covered() -> None:
    assert set(PRESET_OVERRIDES) == set(PRESETS)


@pytest.fixture(scope="module")
def fashion_subset() -> tuple[torch.Tensor, torch.Tensor]:
    bundle = load_fashion_mnist(root="/tmp/unused")
    images = bundle.train.images[:N_IMAGES].float().div(255)
    mean, std = bundle.info.mean[0], bundle.info.std[0]
    return (images - mean) / std, bundle.train.labels[:N_IMAGES]


@pytest.mark.parametrize("preset", PRESET_OVERRIDES)
def test_preset_lowers_the_loss_on_fashion_mnist(
    tiny_cfg: Callable[..., DictConfig], fashion_subset: tuple[torch.Tensor, torch.Tensor], preset: str
) -> None:
    x, y = fashion_subset
    cfg = tiny_cfg(f"optimizer={preset}", *PRESET_OVERRIDES[preset])
    model = tiny_bn_net(seed=0)
    steps_per_epoch = N_IMAGES // BATCH
    optimizer = instantiate_node(
        cfg.optimizer, "optimizer", params=param_groups(model, float(cfg.optimizer.weight_decay)),
        lr=resolved_lr(cfg), steps_per_epoch=steps_per_epoch, total_steps=EPOCHS * steps_per_epoch,
    )

    def full_loss() -> float:  # train-mode BN (batch statistics), so lagging running stats do not matter
        with torch.no_grad():
            return nn.functional.cross_entropy(model(x), y).item()

    initial = full_loss()
    gen = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        for idx in torch.randperm(N_IMAGES, generator=gen).split(BATCH):
            train_step(optimizer, model, x[idx], y[idx])
    final = full_loss()
    assert final < 0.85 * initial, f"{preset}: loss {initial:.3f} -> {final:.3f}"
