"""Schedules are pure functions of the global step, matching hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import compose_config, tiny
from tvlars.config import instantiate_node
from tvlars.optim import TVLARS
from tvlars.schedules import Constant, Phi, WarmupCosine


def test_constant() -> None:
    s = Constant(base_lr=0.3, steps_per_epoch=10, total_steps=100)
    assert [s.lr(t) for t in (0, 50, 99)] == [0.3, 0.3, 0.3]


def test_warmup_cosine_hand_computed() -> None:
    s = WarmupCosine(base_lr=2.0, steps_per_epoch=5, total_steps=50, warmup_epochs=2, floor=0.001)
    assert s.warmup_steps == 10
    assert s.lr(0) == pytest.approx(2.0 / 10)
    assert s.lr(4) == pytest.approx(2.0 * 5 / 10)
    assert s.lr(9) == pytest.approx(2.0)
    assert s.lr(10) == pytest.approx(2.0)  # cosine starts at the peak
    q = 0.5 * (1 + math.cos(math.pi * 20 / 40))
    assert s.lr(30) == pytest.approx(2.0 * (q + 0.001 * (1 - q)))
    assert s.lr(50) == pytest.approx(2.0 * 0.001)  # the floor
    lrs = [s.lr(t) for t in range(10, 50)]
    assert lrs == sorted(lrs, reverse=True)


def test_warmup_longer_than_run_is_capped() -> None:
    s = WarmupCosine(base_lr=1.0, steps_per_epoch=10, total_steps=30, warmup_epochs=20)
    assert s.warmup_steps == 30 and s.lr(29) == pytest.approx(1.0)


@pytest.mark.parametrize(("kwargs", "needle"), [({"warmup_epochs": -1}, "warmup_epochs"), ({"floor": 2}, "floor")])
def test_invalid_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        WarmupCosine(base_lr=1.0, steps_per_epoch=1, total_steps=10, **kwargs)


def test_cosine_preset_is_warmup_cosine_without_warm_up() -> None:
    cfg = compose_config(tiny("schedule=cosine"))
    s = instantiate_node(cfg.schedule, "schedule", base_lr=2.0, steps_per_epoch=5, total_steps=50)
    assert s.warmup_steps == 0 and s.lr(0) == pytest.approx(2.0) and s.lr(50) == pytest.approx(0.002)
    assert s.describe() == "cosine to 0.001×"


def test_short_warmup_warns_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    s = WarmupCosine(base_lr=1.0, steps_per_epoch=2, total_steps=6, warmup_epochs=0.6)
    assert s.warmup_steps == 1
    assert "a warm-up of 1 optimizer step(s) at 2 steps per epoch, fewer than 10" in caplog.text
    assert "raise schedule.warmup_epochs to >= 5" in caplog.text
    assert s.warmup_problem(1) is None and WarmupCosine(1.0, 100, 1000, warmup_epochs=0.1).warmup_problem(10) is None


def test_phi_schedule_follows_the_tvlars_factor() -> None:
    """LARS with the ``phi`` schedule gets, at every step, the factor TVLARS multiplies its trust ratio by."""
    options = {"lam": 0.2, "alpha": 1.0, "gamma_min": 0.01}
    schedule = Phi(base_lr=3.0, steps_per_epoch=4, total_steps=40, delay_epochs=2, **options)
    weight = torch.nn.Parameter(torch.ones(3, 3))
    optimizer = TVLARS([{"params": [weight], "weight_decay": 0.0, "adapt": True}], lr=3.0, delay_epochs=2,
                       steps_per_epoch=4, **options)
    for step in range(12):
        weight.grad = torch.full_like(weight, 0.1)
        optimizer.step()
        phi = float(optimizer.trust_stats()["phi"])
        assert schedule.lr(step) == pytest.approx(3.0 * phi, rel=1e-6), step
    assert schedule.lr(0) == pytest.approx(3.0 * (1 / (1 + math.exp(0.2 * (1 - 8))) + 0.01))
    assert schedule.describe() == "φ(t) (λ=0.2, centre 8 steps)"
