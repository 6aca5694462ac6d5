"""TVLARS: LARS with a time-varying trust-ratio multiplier φ(t) in place of warm-up (Do et al. 2024)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from tvlars.optim._trust import ParamsT, TrustRatioOptimizer, check_range, extends
from tvlars.optim.lars import LARS

# The released code's constants (KhoiDOO/tvlars opt/tvlars.py, 2023-11-20): φ(t) = 1 / (0.1 + exp(λt)), norms ≤ 10.
OFFICIAL = {"alpha": 0.1, "delay_steps": 0, "gamma_min": 0.0, "norm_clamp": 10.0}


def phi(t: float, lam: float, alpha: float, delay_steps: float, gamma_min: float) -> float:
    """``φ(t) = 1 / (α + exp(λ (t − d))) + γ_min`` on the host (the optimizer computes it on the device; the
    :class:`~tvlars.schedules.Phi` schedule uses this). ``t`` counts optimizer steps from 1."""
    exponent = lam * (t - delay_steps)
    return (0.0 if exponent > 700 else 1.0 / (alpha + math.exp(exponent))) + gamma_min


def delay_in_steps(delay_steps: float, delay_epochs: float | None, steps_per_epoch: int | None) -> float:
    """The delay ``d`` in optimizer steps: ``delay_steps``, or ``round(delay_epochs · steps_per_epoch)``."""
    if delay_epochs is None:
        return delay_steps
    check_range("delay_epochs", delay_epochs, 0.0)
    check_range("steps_per_epoch", steps_per_epoch, 1.0)
    if delay_steps:
        raise ValueError(f"give the delay in steps or in epochs, not both (got delay_steps={delay_steps}, "
                         f"delay_epochs={delay_epochs}); set the other to None")
    return round(delay_epochs * steps_per_epoch)


class TVLARS(LARS):
    r"""Time-varying LARS: the LARS trust ratio multiplied by a sigmoid-like decay ``φ(t)``.

    Source: K. Do, D. Nguyen, H. Nguyen, L. Tran-Thanh, N.-H. Tran, Q.-V. Pham, "Revisiting LARS for
    Large Batch Training Generalization of Neural Networks", IEEE Trans. Artificial Intelligence
    (2024), arXiv 2309.14053; released code ``github.com/KhoiDOO/tvlars``. For every tensor ``w`` with
    gradient ``g`` at optimizer step ``t`` (``t = 1`` first; the group's ``"step"`` entry)::

        φ(t)    = 1 / (α + exp(λ · (t − d))) + γ_min
        u_t     = g_t + wd · w_t                                       (decay only if wd > 0)
        r_t     = η · φ(t) · min(‖w_t‖, c) / min(‖u_t‖, c)   if the group adapts and both norms > 0
                = 1                                           otherwise (fallback NOT multiplied by φ)
        b_t     = m · b_{t-1} + r_t · u_t ;   w_{t+1} = w_t − lr · b_t   (as :class:`LARS`)

    ``c = norm_clamp`` (``None``: no clamp). With ``α = 0, λ = 0, γ_min = 0``, ``φ ≡ 1`` and TVLARS is
    exactly LARS.

    Three forms, each one call (the reasons for the defaults are in ``docs/optimizers.md``):

    * ``TVLARS(params, lr)``: the paper's form with our defaults ``α = 1`` (φ is the reversed logistic
      ``sigmoid(−λ(t − d)) + γ_min``), ``λ = 0.001`` per step, ``γ_min = 0.001``. The delay ``d`` is
      ``delay_steps``, or ``round(delay_epochs · steps_per_epoch)`` when ``delay_epochs`` is given; it
      defaults to 0 (then φ starts at ½ + γ_min and decays at once).
    * ``TVLARS.from_epochs(params, lr, steps_per_epoch)``: the same with a 10-epoch delay, the
      ``tvlars`` preset (φ ≈ 1 + γ_min, plain LARS, until the delay).
    * ``TVLARS.official(params, lr)``: the released code, ``η / (0.1 + exp(λt))`` with both norms
      clamped to 10 (``α = 0.1, d = 0, γ_min = 0, c = 10``), the ``tvlars_official`` preset.

    In the released code the 1-D tensors (biases, BN weights) get neither decay nor ratio nor ``φ``;
    here that is a group with ``adapt=False`` (:func:`tvlars.optim.param_groups`), whose tensors get
    ``r = 1``.

    Observables (:meth:`trust_stats`): as :class:`LARS`, where ``trust_ratio`` is ``r_t`` including
    ``η`` and ``φ(t)`` (1 for the fallback and non-adapting groups) and ``update_norm`` is the
    unclamped ``‖u_t‖``; plus ``"phi"``, the 0-d tensor ``φ(t)`` of the last step (absent if that
    step adapted no tensor). ``φ`` is computed on the device from the step tensor: no host synchronisation.

    Args:
        params, lr: as :class:`LARS`; all of LARS's other arguments are accepted (keyword-only).
        lam: decay rate ``λ`` per optimizer step (≥ 0).
        alpha: offset ``α`` (≥ 0); the early plateau is ``≈ 1/α + γ_min`` when ``λ·d ≫ 1``. With
            ``α = 0`` and ``t < d``, ``φ = exp(λ(d − t))`` can be very large.
        delay_steps: delay ``d`` in optimizer steps (≥ 0), the centre of the decay.
        gamma_min: floor ``γ_min`` (≥ 0) of ``φ``.
        norm_clamp: ``c`` (> 0) bounding ``‖w‖`` and ``‖u‖`` in the ratio, or ``None``.
        delay_epochs: the delay in epochs (≥ 0) instead of ``delay_steps``; needs ``steps_per_epoch``.
        steps_per_epoch: optimizer steps per epoch (≥ 1); the training loop passes it.
    """

    lr_factor = "φ(t) on the trust ratio"  # what TVLARS does to the LR besides the schedule (the tables' LR column)

    @extends(LARS)
    def __init__(
        self,
        params: ParamsT,
        lr: float,
        *,
        lam: float = 0.001,
        alpha: float = 1.0,
        delay_steps: float = 0,
        gamma_min: float = 0.001,
        norm_clamp: float | None = None,
        delay_epochs: float | None = None,
        steps_per_epoch: int | None = None,
        **options: Any,
    ) -> None:
        delay_steps = delay_in_steps(delay_steps, delay_epochs, steps_per_epoch)
        fused = options.pop("fused")
        # LARS's arguments (completed with its defaults by @extends) plus the schedule: one defaults dict
        defaults = dict(lr=lr, **options, lam=lam, alpha=alpha, delay_steps=delay_steps, gamma_min=gamma_min,
                        norm_clamp=norm_clamp)
        TrustRatioOptimizer.__init__(self, params, defaults, fused)

    def _check_hyperparameters(self, hp: Mapping[str, Any]) -> None:
        super()._check_hyperparameters(hp)
        check_range("lam", hp["lam"], 0.0)
        check_range("alpha", hp["alpha"], 0.0)
        check_range("delay_steps", hp["delay_steps"], 0.0)
        check_range("gamma_min", hp["gamma_min"], 0.0)
        check_range("norm_clamp", hp["norm_clamp"], 0.0, low_open=True, optional=True)

    @classmethod
    def _step_scalars(cls, hp: Mapping[str, Any], step: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
        if not hp["adapt"]:
            return {}
        phi = (step.to(dtype) - hp["delay_steps"]).mul_(hp["lam"]).exp_()  # φ in the norms' precision
        return {"phi": phi.add_(hp["alpha"]).reciprocal_().add_(hp["gamma_min"])}

    @classmethod
    def _trust_options(cls, hp: Mapping[str, Any], scalars: dict[str, Tensor],
                       like: Tensor) -> tuple[dict[str, Any], dict[str, Tensor]]:
        clamp = hp["norm_clamp"]
        options = {"coefficient": hp["trust_coefficient"], "scale": scalars["phi"], "weight_norm_max": clamp,
                   "update_norm_max": clamp}
        return options, {"phi": scalars["phi"]}

    @classmethod
    def from_epochs(cls, params: ParamsT, lr: float, steps_per_epoch: int, delay_epochs: float = 10.0,
                    **options: Any) -> TVLARS:
        """The ``tvlars`` preset's form: the delay in epochs (default 10); ``options``: TVLARS's other arguments."""
        return cls(params, lr, delay_epochs=delay_epochs, steps_per_epoch=steps_per_epoch, **options)

    @classmethod
    def official(cls, params: ParamsT, lr: float, **options: Any) -> TVLARS:
        """The released code's form (:data:`OFFICIAL`); ``options``: TVLARS's other arguments (they win)."""
        return cls(params, lr, **{**OFFICIAL, **options})


tvlars_from_epochs = TVLARS.from_epochs  # the name of earlier versions (scripts import it)
