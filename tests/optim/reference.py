"""Slow per-tensor reference implementations of the update rules, used by the tests.

Written straight from the formulas in the optimizers' docstrings: one tensor at a time, plain torch
ops, Python ``if`` on the norms and Python-float schedules (they synchronise freely). The fast
multi-tensor optimizers in this package must match them; nothing else should use these classes.

* :class:`ReferenceLARS` covers LARS and, given ``phi``, TVLARS (``phi`` = :func:`tvlars_phi`).
* :class:`ReferenceLAMB` covers LAMB and, given ``clip_min``/``clip_max``, LAMBC.

Both count the step ``t`` once per ``step()`` call and record ``last_stats`` with the same keys and
layout as ``trust_stats()`` of the fast optimizers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from tvlars.optim._trust import ParamsT


def tvlars_phi(t: int, lam: float, alpha: float, delay_steps: float, gamma_min: float) -> float:
    """``φ(t) = 1 / (α + exp(λ(t − d))) + γ_min`` in float64."""
    return 1.0 / (alpha + math.exp(lam * (t - delay_steps))) + gamma_min


class _Reference(Optimizer):
    """Per-tensor loop; subclasses implement ``_update_tensor`` and return ``(ratio, ‖w‖, ‖u‖)``."""

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        super().__init__(params, {**defaults, "adapt": True})
        self.t = 0
        self.last_stats: dict[str, Tensor] = {}

    def _update_tensor(
        self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Any]
    ) -> tuple[float, float, float]:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        assert closure is None
        self.t += 1
        rows: list[tuple[float, float, float]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    rows.append((math.nan, math.nan, math.nan))
                else:
                    rows.append(self._update_tensor(p, p.grad, group, self.state[p]))
        table = torch.tensor(rows, dtype=torch.float32).T
        self.last_stats = dict(zip(("trust_ratio", "weight_norm", "update_norm"), table, strict=True))


class ReferenceLARS(_Reference):
    """LARS (``phi=None``) or TVLARS (``phi(t)`` multiplies the ratio; ``norm_clamp`` clamps norms)."""

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        nesterov: bool = False,
        phi: Callable[[int], float] | None = None,
        norm_clamp: float | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
            nesterov=nesterov, norm_clamp=norm_clamp,
        )
        super().__init__(params, defaults)
        self.phi = phi

    def _update_tensor(
        self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Any]
    ) -> tuple[float, float, float]:
        wd, m = group["weight_decay"], group["momentum"]
        u = g + wd * p if wd > 0 else g.clone()
        weight_norm, update_norm = p.double().norm().item(), u.double().norm().item()
        r = 1.0
        if group["adapt"]:
            w, n = weight_norm, update_norm
            if group["norm_clamp"] is not None:
                w, n = min(w, group["norm_clamp"]), min(n, group["norm_clamp"])
            if w > 0 and n > 0:
                r = group["trust_coefficient"] * (self.phi(self.t) if self.phi else 1.0) * w / n
        scaled = u * r
        if m == 0:
            direction = scaled
        else:
            buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
            buf.mul_(m).add_(scaled)
            direction = scaled + m * buf if group["nesterov"] else buf
        p.sub_(group["lr"] * direction)
        return r, weight_norm, update_norm


class ReferenceLAMB(_Reference):
    """LAMB, or LAMBC when ``clip_min``/``clip_max`` are given."""

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        bias_correction: bool = True,
        weight_norm_clamp: float | None = None,
        clip_max: float | None = None,
        clip_min: float | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, bias_correction=bias_correction,
            weight_norm_clamp=weight_norm_clamp, clip_min=clip_min, clip_max=clip_max,
        )
        super().__init__(params, defaults)

    def _update_tensor(
        self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Any]
    ) -> tuple[float, float, float]:
        beta1, beta2 = group["betas"]
        m = state.setdefault("exp_avg", torch.zeros_like(p))
        v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        m_hat, v_hat = m, v
        if group["bias_correction"]:
            m_hat, v_hat = m / (1 - beta1**self.t), v / (1 - beta2**self.t)
        u = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * p
        weight_norm, update_norm = p.double().norm().item(), u.double().norm().item()
        trust = 1.0
        if group["adapt"]:
            w = weight_norm if group["weight_norm_clamp"] is None else min(weight_norm, group["weight_norm_clamp"])
            if w > 0 and update_norm > 0:
                trust = w / update_norm
            lo = -math.inf if group["clip_min"] is None else group["clip_min"]
            hi = math.inf if group["clip_max"] is None else group["clip_max"]
            trust = min(max(trust, lo), hi)
        p.sub_(group["lr"] * trust * u)
        return trust, weight_norm, update_norm
