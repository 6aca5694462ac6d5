"""TVLARS: LARS with a time-varying trust-ratio multiplier φ(t) in place of warm-up (Do et al. 2024)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from tvlars.optim._trust import ParamsT, TrustRatioOptimizer, check_range
from tvlars.optim.lars import LARS


class TVLARS(LARS):
    r"""Time-varying LARS: the LARS trust ratio multiplied by a sigmoid-like decay ``φ(t)``.

    Source: K. Do, D. Nguyen, H. Nguyen, L. Tran-Thanh, N.-H. Tran, Q.-V. Pham, "Revisiting LARS for
    Large Batch Training Generalization of Neural Networks", IEEE Trans. Artificial Intelligence
    (2024), arXiv 2309.14053; released code ``github.com/KhoiDOO/tvlars`` (``opt/tvlars.py``, final
    version of 2023-11-20). For every tensor ``w`` with gradient ``g`` at optimizer step ``t``
    (``t = 1`` on the first step; the count is the group's ``"step"`` entry, saved by ``state_dict``)::

        φ(t)    = 1 / (α + exp(λ · (t − d))) + γ_min
        u_t     = g_t + wd · w_t                                       (decay only if wd > 0)
        r_t     = η · φ(t) · min(‖w_t‖, c) / min(‖u_t‖, c)   if the group adapts and both norms > 0
                = 1                                           otherwise (fallback NOT multiplied by φ)
        b_t     = m · b_{t-1} + r_t · u_t ;   w_{t+1} = w_t − lr · b_t   (as :class:`LARS`)

    ``c = norm_clamp`` (``None``: no clamp). With ``α = 0, λ = 0, γ_min = 0``, ``φ ≡ 1`` and TVLARS is
    exactly LARS. The step count ``t`` advances at every step in which the group adapts a tensor.

    **Paper vs released code.** The paper's ``φ`` has a free offset ``α``, a delay ``d`` and a floor
    ``γ_min``. The released code computes ``η / (0.1 + exp(λ · (k + 1)))`` with the 0-based optimizer
    step ``k``: ``α = 0.1``, ``d = 0``, ``γ_min = 0``, ``t = k + 1``, both norms clamped to ``[0, 10]``,
    a constant LR with no warm-up, and ``φ(1) ≈ 0.91`` decaying to 0 (it never raises the LARS ratio).
    In that code the 1-D tensors (biases, BN weights) get neither decay nor ratio nor ``φ``: they
    train with the raw, constant LR for the whole run. Here that is a group with ``adapt=False``
    (:func:`tvlars.optim.param_groups`), whose tensors get ``r = 1``. The class defaults reproduce
    the released schedule (``λ = 0.001``, its ``--lmbda`` default); add ``norm_clamp=10`` for the
    exact released rule (the ``tvlars_official`` preset).

    **Defaults of the ``tvlars`` preset (our choice; the paper's values are not known).** Built by
    :func:`tvlars_from_epochs` with ``α = 1``, ``delay_epochs = 10``, ``λ = 0.001`` per step,
    ``γ_min = 0.001``:

    * ``α = 1`` makes ``φ`` the reversed logistic ``sigmoid(−λ(t − d)) + γ_min`` (the paper's
      "sigmoid-like" function) whose plateau before the delay is ``φ ≈ 1 + γ_min``: TVLARS starts as
      LARS at the full configured LR with no warm-up, and ``φ(d) = ½ + γ_min``. The released code's
      ``α = 0.1`` with a delay would start at ``φ ≈ 10``, ten times any step in the authors' LR grids
      (tuned with ``φ ≤ 0.91``).
    * ``delay_epochs = 10``: the authors' code from Aug to Nov 2023 (when v1 was posted) ran plain
      LARS for the first 10 epochs before decaying; ``α = 1`` with ``d = 10`` epochs is that schedule
      without its jump. The factory converts it with ``d = round(delay_epochs · steps_per_epoch)``.
    * ``λ = 0.001`` per optimizer step: the released code's default, in the unit its grid uses
      (``1e-6 … 5e-2``). The transition spans about ``4/λ`` steps, so its length in epochs grows with
      the number of steps per epoch (the authors tune ``λ`` per batch size); the plateau is flat only
      when ``λ·d ≫ 1``, otherwise ``φ`` starts between ½ and 1.
    * ``γ_min = 0.001``: a floor so the LR never vanishes (the released code's ``φ → 0`` quirk), equal
      to the 0.001× end-of-cosine floor of the baselines' warm-up schedule in the same code, so all
      methods end at a comparable fraction of their base LR.

    Observables (:meth:`trust_stats`): as :class:`LARS`, where ``trust_ratio`` is ``r_t`` including
    ``η`` and ``φ(t)`` (1 for the fallback and non-adapting groups) and ``update_norm`` is the
    unclamped ``‖u_t‖``; plus ``"phi"``, the 0-d tensor ``φ(t)`` of the last step (absent if that
    step adapted no tensor). ``φ`` is computed on the device from the step tensor: no host synchronisation.

    Args:
        params, lr, momentum, weight_decay, trust_coefficient: as :class:`LARS` (no Nesterov).
        lam: decay rate ``λ`` per optimizer step (≥ 0).
        alpha: offset ``α`` (≥ 0); the early plateau is ``≈ 1/α + γ_min`` when ``λ·d ≫ 1``. With
            ``α = 0`` and ``t < d``, ``φ = exp(λ(d − t))`` can be very large.
        delay_steps: delay ``d`` in optimizer steps (≥ 0), the centre of the decay.
        gamma_min: floor ``γ_min`` (≥ 0) of ``φ``.
        norm_clamp: ``c`` (> 0) bounding ``‖w‖`` and ``‖u‖`` in the ratio, or ``None``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        lam: float = 0.001,
        alpha: float = 0.1,
        delay_steps: float = 0,
        gamma_min: float = 0.0,
        norm_clamp: float | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            nesterov=False,
            lam=lam,
            alpha=alpha,
            delay_steps=delay_steps,
            gamma_min=gamma_min,
            norm_clamp=norm_clamp,
        )
        TrustRatioOptimizer.__init__(self, params, defaults)  # LARS's defaults plus the schedule

    def _check_hyperparameters(self, hp: Any) -> None:
        super()._check_hyperparameters(hp)
        check_range("lam", hp["lam"], 0.0)
        check_range("alpha", hp["alpha"], 0.0)
        check_range("delay_steps", hp["delay_steps"], 0.0)
        check_range("gamma_min", hp["gamma_min"], 0.0)
        check_range("norm_clamp", hp["norm_clamp"], 0.0, low_open=True, optional=True)

    def _trust_options(self, group: dict[str, Any], like: Tensor) -> dict[str, Any]:
        step = self._next_step(group, like).to(like.dtype)  # φ in the norms' precision
        phi = (step - group["delay_steps"]).mul_(group["lam"]).exp_()
        phi = phi.add_(group["alpha"]).reciprocal_().add_(group["gamma_min"])
        self._extra_stats["phi"] = phi
        clamp = group["norm_clamp"]
        return {
            "coefficient": group["trust_coefficient"],
            "scale": phi,
            "weight_norm_max": clamp,
            "update_norm_max": clamp,
        }


def tvlars_from_epochs(
    params: ParamsT,
    lr: float,
    steps_per_epoch: int,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    trust_coefficient: float = 0.001,
    lam: float = 0.001,
    alpha: float = 1.0,
    delay_epochs: float = 10.0,
    gamma_min: float = 0.001,
    norm_clamp: float | None = None,
) -> TVLARS:
    """TVLARS with the delay given in epochs: ``delay_steps = round(delay_epochs · steps_per_epoch)``.

    The target of the ``tvlars`` preset; the training loop passes ``steps_per_epoch``. Defaults are
    the preset's (see :class:`TVLARS` for why); ``λ`` stays per optimizer step.
    """
    check_range("steps_per_epoch", steps_per_epoch, 1.0)
    check_range("delay_epochs", delay_epochs, 0.0)
    return TVLARS(
        params,
        lr,
        momentum=momentum,
        weight_decay=weight_decay,
        trust_coefficient=trust_coefficient,
        lam=lam,
        alpha=alpha,
        delay_steps=round(delay_epochs * steps_per_epoch),
        gamma_min=gamma_min,
        norm_clamp=norm_clamp,
    )
