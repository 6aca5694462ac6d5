"""TVLARS's φ(t) as a learning-rate schedule: ``lr(t) = base_lr · φ(t + 1)``.

TVLARS multiplies the LARS trust ratio of every adapted tensor by φ(t), so for those tensors it is LARS with the LR
``base_lr · φ(t)``; the difference is that here the non-adapted tensors (biases, BatchNorm: trust 1) follow φ too.
LARS with this schedule is the control that tells whether TVLARS is more than an LR schedule.
"""

from __future__ import annotations

from tvlars.optim.tvlars import delay_in_steps, phi
from tvlars.schedules.base import Schedule


class Phi(Schedule):
    """``lr(step) = base_lr · φ(step + 1)`` with ``φ(t) = 1 / (α + exp(λ (t − d))) + γ_min`` (:func:`tvlars.optim.
    tvlars.phi`; ``step`` is 0-based, TVLARS counts its steps from 1), the same arguments and defaults as the
    ``tvlars`` optimizer preset: ``d`` is ``delay_steps``, or ``delay_epochs`` × steps per epoch."""

    def __init__(self, base_lr: float, steps_per_epoch: int, total_steps: int, lam: float = 0.001,
                 alpha: float = 1.0, delay_steps: float = 0, gamma_min: float = 0.001,
                 delay_epochs: float | None = None) -> None:
        super().__init__(base_lr, steps_per_epoch, total_steps)
        for name, value in (("lam", lam), ("alpha", alpha), ("delay_steps", delay_steps), ("gamma_min", gamma_min)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (got {value})")
        self.lam, self.alpha, self.gamma_min = lam, alpha, gamma_min
        self.delay_steps = delay_in_steps(delay_steps, delay_epochs, steps_per_epoch)

    def lr(self, step: int) -> float:
        return self.base_lr * phi(step + 1, self.lam, self.alpha, self.delay_steps, self.gamma_min)

    def describe(self) -> str:
        return f"φ(t) (λ={self.lam:g}, centre {self.delay_steps:g} steps)"
