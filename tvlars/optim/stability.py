r"""An optimizer's update as preconditioned momentum, and where it stops being stable: what the sharpness instrument
compares (docs/instruments.md#preconditioned-sharpness).

Every optimizer here moves its parameters as ``w ← w − η · P · b``: ``η`` the LR in force, ``b`` a momentum average
of gradients and ``P`` a positive diagonal, per tensor (LARS's trust ratios) or per coordinate (Adam's
``1/(√v̂ + ε)``), that changes slowly next to ``w``. On a quadratic with Hessian ``H`` and ``P`` frozen this is the
momentum method on ``P H``, whose eigenvalues are those of ``P^{1/2} H P^{1/2}``, so the iteration is stable iff

    λ_max(P^{1/2} H P^{1/2}) < threshold(η, momentum)

(Cohen et al. 2021, "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability"; Cohen et al.
2022, "Adaptive Gradient Methods at the Edge of Stability"), with :func:`momentum_threshold`:

=======================================================  =============================  ========================
momentum                                                 ``b``                          threshold
=======================================================  =============================  ========================
none                                                     ``g``                          ``2/η``
heavy ball ``β``, dampening ``d`` (LARS: ``d = 0``)      ``β b + (1 − d) g``            ``(2 + 2β)/((1 − d) η)``
Nesterov ``β``                                           step ``g + β b``               ``(2 + 2β)/((1 + 2β) η)``
Adam's EMA ``β1`` (heavy ball with ``d = β1``)           ``β1 m + (1 − β1) g``          ``(2 + 2β1)/((1 − β1) η)``
=======================================================  =============================  ========================

An optimizer class declares its ``P`` and threshold with a method ``preconditioner() -> Preconditioner | None``
(LARS, TVLARS, LAMB, LAMBC); :func:`preconditioner` reads it, and knows torch's SGD (``P = I``), Adam and AdamW
itself. ``None``: the optimizer has no such form (CDAT's step size follows the curvature itself) or has not stepped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer


@dataclass(frozen=True)
class Preconditioner:
    """``w ← w − lr · P · b`` as the sharpness instrument compares it (module docstring).

    ``diagonal``: ``P`` for every parameter in ``param_groups`` order, each a tensor that broadcasts to the
    parameter (0-d: one value per tensor), relative to ``lr`` (a group with another LR has its ratio folded in); 0
    for a parameter the last step did not move; ``None``: ``P = I``. ``threshold``: the largest
    ``λ_max(P^{1/2} H P^{1/2})`` at which the update is stable on a quadratic at ``lr``, ``None`` when no LR is in
    force (``lr ≤ 0``). Device tensors, made without host synchronisation.
    """

    lr: float
    threshold: float | None
    diagonal: list[Tensor] | None = None


def first_group(optimizer: Optimizer) -> dict[str, Any]:
    """The first parameter group that adapts (``adapt``, the paper's convention), else the first group: the group
    whose LR and momentum the instruments report."""
    return next((g for g in optimizer.param_groups if g.get("adapt", True)), optimizer.param_groups[0])


def momentum_threshold(lr: float, momentum: float, dampening: float = 0.0, nesterov: bool = False) -> float | None:
    """The stability threshold of the momentum method at LR ``lr`` (the module docstring's table); ``None`` when
    ``lr ≤ 0`` or ``dampening ≥ 1`` (no step)."""
    if lr <= 0 or (momentum and dampening >= 1):
        return None
    if momentum == 0:
        return 2.0 / lr
    if nesterov:
        return (2.0 + 2.0 * momentum) / ((1.0 + 2.0 * momentum) * lr)
    return (2.0 + 2.0 * momentum) / ((1.0 - dampening) * lr)


def one_minus_pow(beta: float, step: Tensor) -> Tensor:
    """``1 − β^t`` as ``−expm1(t · ln β)``: no cancellation in float32 when β is close to 1."""
    return torch.expm1(step * (math.log(beta) if beta > 0 else -math.inf)).neg()


def adam_diagonal(exp_avg_sq: Tensor, step: Tensor | None, betas: Sequence[float], eps: float) -> Tensor:
    r"""Adam's step per unit LR and unit first moment ``m``, per coordinate: ``1 / (c1 (√(v / c2) + ε))`` with
    ``c_i = 1 − β_i^t`` at step count ``t`` (``step``), i.e. the map ``m ↦ m̂ / (√v̂ + ε)``; ``step=None``: no bias
    correction, ``1 / (√v + ε)``."""
    if step is None:
        return exp_avg_sq.sqrt().add(eps).reciprocal()
    beta1, beta2 = betas
    return (exp_avg_sq / one_minus_pow(beta2, step)).sqrt().add(eps).mul(one_minus_pow(beta1, step)).reciprocal()


def relative_to_lr(optimizer: Optimizer, diagonal: list[Tensor] | None, momentum: float, dampening: float = 0.0,
                   nesterov: bool = False) -> Preconditioner:
    """The :class:`Preconditioner` of ``diagonal`` (``P`` per parameter at its own group's LR; ``None``: ``I``) at
    the first adapting group's LR η: each group's ``lr_g / η`` folded into its entries, and the threshold of the
    momentum (:func:`momentum_threshold`, the first adapting group's) at η."""
    lr = float(first_group(optimizer)["lr"])
    threshold = momentum_threshold(lr, momentum, dampening, nesterov)
    if threshold is None:
        return Preconditioner(lr, None)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    factors = [group["lr"] / lr for group in optimizer.param_groups for _ in group["params"]]
    if diagonal is None:
        if all(f == 1.0 for f in factors):
            return Preconditioner(lr, threshold)
        diagonal = [p.new_ones(()) for p in params]
    return Preconditioner(lr, threshold, [d if f == 1.0 else d * f for d, f in zip(diagonal, factors, strict=True)])


def _sgd(optimizer: torch.optim.SGD) -> Preconditioner:
    group = first_group(optimizer)
    return relative_to_lr(optimizer, None, group["momentum"], group["dampening"], group["nesterov"])


def _adam(optimizer: torch.optim.Adam | torch.optim.AdamW) -> Preconditioner:
    """Adam/AdamW: :func:`adam_diagonal` per coordinate (``max_exp_avg_sq`` with ``amsgrad``); decoupled weight
    decay is left out, as weight decay everywhere (it adds ``lr · wd`` to every eigenvalue of the step)."""
    diagonal = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            v = state.get("max_exp_avg_sq" if group["amsgrad"] else "exp_avg_sq")
            diagonal.append(p.new_zeros(()) if v is None else adam_diagonal(v, state["step"], group["betas"],
                                                                              group["eps"]))
    beta1 = first_group(optimizer)["betas"][0]
    return relative_to_lr(optimizer, diagonal, beta1, dampening=beta1)


# torch's optimizers, which cannot carry the method themselves
_TORCH: dict[type, Callable[[Any], Preconditioner]] = {torch.optim.SGD: _sgd, torch.optim.Adam: _adam,
                                                       torch.optim.AdamW: _adam}


def preconditioner(optimizer: Optimizer) -> Preconditioner | None:
    """The optimizer's current :class:`Preconditioner` (its ``preconditioner()`` method, or torch's SGD, Adam and
    AdamW), or ``None`` when it declares none."""
    method = getattr(optimizer, "preconditioner", None)
    if method is not None:
        return method()
    adapter = _TORCH.get(type(optimizer))
    return adapter(optimizer) if adapter is not None else None
