"""Schedules are pure functions of the global step, matching hand-computed values."""

from __future__ import annotations

import math

import pytest

from tvlars.schedules import Constant, WarmupCosine


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
