"""The schedule interface: the learning rate as a pure function of the global optimizer step."""

from __future__ import annotations

from typing import Any

from torch import Tensor


class Schedule:
    """Maps the global step (0 for the first update) to a learning rate.

    ``lr(step)`` must depend only on ``step`` and on state saved by ``state_dict`` so that resuming from a
    checkpoint is exact. Schedules that adapt to training (an adaptive warm-up) also receive every step's
    training loss through ``observe`` as a device tensor; they must not synchronise with the host there.
    """

    def __init__(self, base_lr: float, steps_per_epoch: int, total_steps: int) -> None:
        self.base_lr = base_lr
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps

    def lr(self, step: int) -> float:
        raise NotImplementedError

    def describe(self) -> str:
        """The schedule in a few words, for tables (e.g. ``linear warm-up 12 steps + cosine to 0.001×``)."""
        return type(self).__name__

    def warmup_problem(self, minimum: int) -> str | None:
        """Why this schedule's warm-up is too short to count as one (fewer than ``minimum`` steps), or ``None``."""
        return None

    def observe(self, step: int, loss: Tensor) -> None:
        """Called after every optimizer step with that step's (detached) training loss."""

    def summary(self) -> dict[str, Any]:
        """What the run's ``summary.json`` records of the schedule (an adaptive schedule's decisions); none here."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class Constant(Schedule):
    """``lr(t) = base_lr`` (the paper's setting for TVLARS and for the no-warm-up baselines)."""

    def lr(self, step: int) -> float:
        return self.base_lr

    def describe(self) -> str:
        return "constant"
