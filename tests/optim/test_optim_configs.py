"""The optimizer presets (every ``configs/optimizer/*.yaml``): they compose with the config tree, build through
the loop's instantiation path and step; the ``*_official`` presets are the classes' ``official`` forms, and
``tvlars_official`` reproduces a trajectory of the released TVLARS formula."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig
from torch import nn

from tests.optim.optim_cases import PRESETS, tiny_bn_net, train_step
from tvlars import optim
from tvlars.config import instantiate_node, resolved_lr, validate
from tvlars.optim import LAMB, TVLARS, param_groups
from tvlars.optim.lamb import OFFICIAL as LAMB_OFFICIAL
from tvlars.optim.tvlars import OFFICIAL as TVLARS_OFFICIAL

STEPS_PER_EPOCH, TOTAL_STEPS = 7, 70


def build(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer as the training loop builds it (param groups, resolved LR, offered loop facts)."""
    groups = param_groups(model, float(cfg.optimizer.get("weight_decay", 0.0)))
    return instantiate_node(cfg.optimizer, "optimizer", params=groups, lr=resolved_lr(cfg),
                            steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL_STEPS)


@pytest.mark.parametrize("schedule", ["none", "warmup_cosine"])
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_builds_and_steps(tiny_cfg: Callable[..., DictConfig], preset: str, schedule: str) -> None:
    cfg = tiny_cfg(f"optimizer={preset}", f"schedule={schedule}")
    validate(cfg)  # every YAML key is a constructor argument of its _target_
    assert {"lr", "weight_decay"} <= set(cfg.optimizer)
    model = tiny_bn_net()
    optimizer = build(cfg, model)
    schedule_ = instantiate_node(cfg.schedule, "schedule", base_lr=resolved_lr(cfg),
                                 steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL_STEPS)
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(2):
        for group in optimizer.param_groups:
            group["lr"] = schedule_.lr(step)
        train_step(optimizer, model, torch.randn(8, 1, 28, 28), torch.arange(8))
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(p, b) for p, b in zip(after, before, strict=True))
    if hasattr(optimizer, "trust_stats"):
        stats = optimizer.trust_stats()
        assert stats["trust_ratio"].shape == (len(before),)


def test_every_optimizer_of_the_package_has_a_preset(tiny_cfg: Callable[..., DictConfig]) -> None:
    targets = {tiny_cfg(f"optimizer={preset}").optimizer._target_ for preset in PRESETS}
    classes = [name for name in optim.__all__ if isinstance(getattr(optim, name), type)]
    assert classes and all(f"tvlars.optim.{name}" in targets for name in classes), sorted(targets)


@pytest.mark.parametrize(("preset", "official", "fixed"), [("tvlars_official", TVLARS.official, TVLARS_OFFICIAL),
                                                           ("lamb_official", LAMB.official, LAMB_OFFICIAL)])
def test_official_presets_are_the_official_forms(tiny_cfg: Callable[..., DictConfig], preset: str,
                                                 official: Callable[..., torch.optim.Optimizer],
                                                 fixed: dict[str, object]) -> None:
    """The preset's values of the released constants are those of the ``official`` form (which supplies them)."""
    cfg = tiny_cfg(f"optimizer={preset}")
    model = tiny_bn_net()
    options = {k: v for k, v in cfg.optimizer.items() if k not in ("_target_", "lr", *fixed)}
    expected = official(param_groups(model, float(cfg.optimizer.weight_decay)), resolved_lr(cfg), **options)
    assert build(cfg, model).param_groups == expected.param_groups


def test_tvlars_preset_converts_the_delay_with_the_loops_steps_per_epoch(tiny_cfg: Callable[..., DictConfig]) -> None:
    optimizer = build(tiny_cfg("optimizer=tvlars"), tiny_bn_net())
    assert isinstance(optimizer, TVLARS)
    group = optimizer.param_groups[0]
    assert group["delay_steps"] == round(10.0 * STEPS_PER_EPOCH)
    assert (group["alpha"], group["lam"], group["gamma_min"], group["norm_clamp"]) == (1.0, 0.001, 0.001, None)


def _released_tvlars_step(model: nn.Module, buffers: dict[nn.Parameter, torch.Tensor], k: int, lr: float,
                          lmbda: float, eta: float = 1e-3, weight_decay: float = 5e-4, momentum: float = 0.9) -> None:
    """The released TVLARS update (paper.md §3.5), written independently: filters by ``ndim == 1``, norms
    clamped to [0, 10], decay ``1 / (0.1 + e^{λ(k+1)})`` with the 0-based global step ``k``."""
    decay = 1.0 / (0.1 + math.exp(lmbda * (k + 1)))
    with torch.no_grad():
        for p in model.parameters():
            dp = p.grad
            if p.ndim != 1:
                dp = dp.add(p, alpha=weight_decay)
                param_norm = torch.clamp(torch.norm(p), 0, 10)
                update_norm = torch.clamp(torch.norm(dp), 0, 10)
                q = torch.where((param_norm > 0) & (update_norm > 0),
                                eta * decay * param_norm / update_norm, torch.ones_like(param_norm))
                dp = dp.mul(q)
            mu = buffers.setdefault(p, torch.zeros_like(p))
            mu.mul_(momentum).add_(dp)
            p.add_(mu, alpha=-lr)


def test_tvlars_official_reproduces_the_released_formula(tiny_cfg: Callable[..., DictConfig]) -> None:
    lr, lmbda = 2.0, 0.05  # φ falls from 0.87 to 0.2 over the 30 steps
    cfg = tiny_cfg("optimizer=tvlars_official", f"optimizer.lr={lr}", f"optimizer.lam={lmbda}")
    ours, released = tiny_bn_net().double(), tiny_bn_net().double()
    with torch.no_grad():  # one weight above the clamp of 10 and one below
        for model in (ours, released):
            model[0].weight.mul_(40.0)
    assert ours[0].weight.norm() > 10 > ours[3].weight.norm()
    optimizer = build(cfg, ours)
    buffers: dict[nn.Parameter, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(0)
    for k in range(30):
        x, y = torch.randn(16, 1, 28, 28, generator=gen, dtype=torch.float64), torch.arange(16) % 10
        for model in (ours, released):
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        _released_tvlars_step(released, buffers, k, lr, lmbda)
        for p, q in zip(ours.parameters(), released.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    assert optimizer.trust_stats()["phi"].item() == pytest.approx(1 / (0.1 + math.exp(lmbda * 30)), rel=1e-12)
