"""Linear warm-up then cosine decay to a floor, updated every optimizer step (the paper's baseline schedule)."""

from __future__ import annotations

import logging
import math

from tvlars.schedules.base import Schedule

log = logging.getLogger("tvlars")
MIN_WARMUP_STEPS = 10  # a shorter linear warm-up starts within 10 % of the peak LR: hardly a warm-up


class WarmupCosine(Schedule):
    """Warm-up for ``W = warmup_epochs · steps_per_epoch`` steps, then cosine to ``floor · base_lr``.

    For step ``t`` (0-based) and ``T`` total steps::

        t < W:   lr = base_lr · (t + 1) / W
        t >= W:  q  = ½ (1 + cos(π (t − W) / (T − W)))
                 lr = base_lr · (q + floor · (1 − q))

    This is the released code's ``lars-warm`` schedule (20 warm-up epochs, floor 0.001) except that warm-up
    starts at ``base_lr / W`` instead of exactly 0, so no step is wasted at LR 0 (Goyal et al. 2017 start at a
    fraction of the peak too). ``warmup_epochs=0`` is plain cosine decay (the ``cosine`` preset: the no-warm-up
    baseline at the same decay). If the run is shorter than the warm-up, ``W`` is capped at ``T`` (then the LR
    peaks on the last step).

    A warm-up of fewer than :data:`MIN_WARMUP_STEPS` steps hardly exists (a 1-step "warm-up" starts at the peak
    LR): the schedule warns, and a table spec refuses it (``min_warmup_steps``, :mod:`tvlars.spec`).
    """

    def __init__(self, base_lr: float, steps_per_epoch: int, total_steps: int,
                 warmup_epochs: float = 20.0, floor: float = 0.001) -> None:
        super().__init__(base_lr, steps_per_epoch, total_steps)
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0 (got {warmup_epochs})")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be in [0, 1] (got {floor})")
        self.warmup_epochs = warmup_epochs
        self.warmup_steps = min(round(warmup_epochs * steps_per_epoch), total_steps)
        self.floor = floor
        problem = self.warmup_problem(MIN_WARMUP_STEPS)
        if problem:
            log.warning("warning: %s", problem)

    def warmup_problem(self, minimum: int) -> str | None:
        if not 0 < self.warmup_steps < minimum:
            return None
        needed = math.ceil(minimum / self.steps_per_epoch * 100) / 100
        return (f"schedule.warmup_epochs={self.warmup_epochs:g} is a warm-up of {self.warmup_steps} optimizer step(s) "
                f"at {self.steps_per_epoch} steps per epoch, fewer than {minimum}: its first step is already at "
                f"1/{self.warmup_steps} of the peak LR; raise schedule.warmup_epochs to >= {needed:g} (or use a "
                "smaller batch)")

    def describe(self) -> str:
        if not self.warmup_steps:
            return f"cosine to {self.floor:g}×"
        steps = f"{self.warmup_steps} step{'s' if self.warmup_steps != 1 else ''}"
        return f"linear warm-up {steps} + cosine to {self.floor:g}×"

    def lr(self, step: int) -> float:
        w, total = self.warmup_steps, self.total_steps
        if step < w:
            return self.base_lr * (step + 1) / w
        progress = min(1.0, (step - w) / max(1, total - w))
        q = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base_lr * (q + self.floor * (1.0 - q))
