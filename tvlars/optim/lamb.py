"""LAMB: layer-wise adaptive moments for large-batch training (You et al. 2019/2020)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from tvlars.optim._trust import (
    GroupUpdate,
    Layout,
    ParamsT,
    TrustRatioOptimizer,
    add_constant_,
    add_scaled_,
    addcmul_,
    batched_norms,
    check_bool,
    check_range,
    descend,
    is_zero,
    lerp_,
    spread,
)
from tvlars.optim.stability import Preconditioner, adam_diagonal, first_group, one_minus_pow, relative_to_lr

# The TVLARS paper's released LAMB (opt/lamb.py, from cybertronai/pytorch-lamb): no bias correction, ‖w‖ ≤ 10.
OFFICIAL = {"bias_correction": False, "weight_norm_clamp": 10.0}


def as_betas(betas: Sequence[float]) -> tuple[float, float]:
    """``betas`` as a tuple of two floats (accepts lists and OmegaConf ``ListConfig``)."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2), each in [0, 1) (got {betas!r})") from None
    return float(beta1), float(beta2)


class LAMB(TrustRatioOptimizer):
    r"""LAMB: Adam's direction, rescaled per tensor by the trust ratio ``‖w‖ / ‖u‖`` (optionally clipped).

    Source: Y. You, J. Li, S. Reddi, J. Hseu, S. Kumar, S. Bhojanapalli, X. Song, J. Demmel, K. Keutzer,
    C.-J. Hsieh, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020
    (arXiv 1904.00962), Algorithm 2 with ``φ(z) = z`` (optionally clamped). For every tensor ``w`` with
    gradient ``g`` at step ``t`` (``t = 1`` first; the group's ``"step"`` entry)::

        m_t = β1 · m_{t-1} + (1 − β1) · g_t ;   v_t = β2 · v_{t-1} + (1 − β2) · g_t²     (m_0 = v_0 = 0)
        m̂_t = m_t / (1 − β1^t) ;   v̂_t = v_t / (1 − β2^t)         (only if bias_correction; else m̂=m, v̂=v)
        u_t = m̂_t / (√v̂_t + ε) + wd · w_t                           (L2 inside the update, before the norm)
        τ_t = min(‖w_t‖, c) / ‖u_t‖   if the group adapts and both norms > 0,   else 1
        τ_t ← clamp(τ_t, clip_min, clip_max)                         (adapting groups; LAMBC's clipping)
        w_{t+1} = w_t − lr · τ_t · u_t

    ``c = weight_norm_clamp``; ``None`` disables a clamp or bound. ``LAMB.official(params, lr)`` is the
    TVLARS paper's released LAMB (``bias_correction=False, weight_norm_clamp=10``, the ``lamb_official``
    preset); unlike that code, tensors of a group with ``adapt=False`` (1-D tensors under
    :func:`tvlars.optim.param_groups`) get ``τ = 1`` and that group's decay (0 there), i.e. an Adam step
    with the base LR. :class:`LAMBC` is LAMB with ``clip_max = 1``. Gradients are not modified.

    Implementation: multi-tensor kernels, batched norms, the step count and bias corrections as device
    tensors, or the same compiled (``fused``); no host synchronisation.

    Observables (:meth:`trust_stats`): ``trust_ratio`` = ``τ_t`` actually applied to ``u_t`` (1 for
    the fallback and non-adapting groups; clipped); ``update_norm`` = ``‖u_t‖`` before scaling;
    ``weight_norm`` = unclamped ``‖w_t‖``.

    Args:
        params: tensors or param groups (keys ``weight_decay``, ``adapt``, ``lr`` ... override defaults).
        lr: learning rate (≥ 0), read from each group at every step.
        betas: ``(β1, β2)``, each in [0, 1).
        eps: ``ε`` (≥ 0), added to ``√v̂``.
        weight_decay: ``wd`` (≥ 0).
        bias_correction: divide the moments by ``1 − β^t``.
        weight_norm_clamp: ``c`` (> 0) bounding ``‖w‖`` in the ratio, or ``None``.
        clip_max: upper bound (> 0) of the trust ratio, or ``None``.
        clip_min: lower bound (≥ 0, ≤ ``clip_max``) of the trust ratio, or ``None``.
        fused: compile the step (``None``: on CUDA only).
    """

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
        *,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, betas=as_betas(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, weight_norm_clamp=weight_norm_clamp, clip_max=clip_max,
                        clip_min=clip_min)
        super().__init__(params, defaults, fused)

    @classmethod
    def official(cls, params: ParamsT, lr: float, **options: Any) -> LAMB:
        """The TVLARS paper's released LAMB (:data:`OFFICIAL`); ``options``: LAMB's other arguments (they win)."""
        return cls(params, lr, **{**OFFICIAL, **options})

    def preconditioner(self) -> Preconditioner | None:
        r"""The last step as ``w ← w − lr · P · m`` (:mod:`tvlars.optim.stability`): per coordinate
        ``P = τ / (c1 (√(v / c2) + ε))``, the tensor's trust ratio ``τ`` (clipped; 1 where the group does not adapt)
        times Adam's :func:`~tvlars.optim.stability.adam_diagonal`, on the EMA momentum ``m`` (threshold
        ``(2 + 2β1)/((1 − β1) lr)``). The decay term ``wd · w`` inside ``u`` is left out (weight decay is ignored
        everywhere). ``None`` before the first step."""
        stats = self.trust_stats()
        if not stats:
            return None
        # NaN: no gradient at the last step, not moved (P = 0); such a tensor may also have no moments yet
        ratios = iter(stats["trust_ratio"].nan_to_num(0.0).unbind())
        diagonal = []
        for group in self.param_groups:
            step = group.get("step") if group["bias_correction"] else None
            for p in group["params"]:
                ratio, v = next(ratios), self.state[p].get("exp_avg_sq")
                diagonal.append(ratio if v is None else ratio * adam_diagonal(v, step, group["betas"], group["eps"]))
        beta1 = first_group(self)["betas"][0]
        return relative_to_lr(self, diagonal, beta1, dampening=beta1)

    def _check_hyperparameters(self, hp: Mapping[str, Any]) -> None:
        super()._check_hyperparameters(hp)
        beta1, beta2 = as_betas(hp["betas"])
        check_range("betas[0]", beta1, 0.0, 1.0, high_open=True)
        check_range("betas[1]", beta2, 0.0, 1.0, high_open=True)
        check_range("eps", hp["eps"], 0.0)
        check_bool("bias_correction", hp["bias_correction"])
        check_range("weight_norm_clamp", hp["weight_norm_clamp"], 0.0, low_open=True, optional=True)
        check_range("clip_max", hp["clip_max"], 0.0, low_open=True, optional=True)
        check_range("clip_min", hp["clip_min"], 0.0, optional=True)
        if hp["clip_min"] is not None and hp["clip_max"] is not None and hp["clip_min"] > hp["clip_max"]:
            raise ValueError(f"clip_min must be <= clip_max (got {hp['clip_min']} > {hp['clip_max']})")

    @classmethod
    def _state_keys(cls, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    @classmethod
    def _derived(cls, hp: Mapping[str, Any]) -> dict[str, Any]:
        beta1, beta2 = hp["betas"]
        return {"one_minus_betas": (1.0 - beta1, 1.0 - beta2)}

    @classmethod
    def _step_scalars(cls, hp: Mapping[str, Any], step: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
        if not hp["bias_correction"]:
            return {}
        beta1, beta2 = hp["betas"]
        t = step.to(dtype)  # the norms' precision
        sqrt_c2 = one_minus_pow(beta2, t).sqrt()  # c_i = 1 − β_i^t
        scale = sqrt_c2 / one_minus_pow(beta1, t)  # s = √c2 / c1
        return {"scale": scale, "eps": sqrt_c2 * hp["eps"], "decay": hp["weight_decay"] / scale}

    @classmethod
    def _trust_options(cls, hp: Mapping[str, Any], scalars: dict[str, Tensor],
                       like: Tensor) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"weight_norm_max": hp["weight_norm_clamp"], "clip_min": hp["clip_min"],
                "clip_max": hp["clip_max"]}, {}

    @classmethod
    def _update(cls, hp: Mapping[str, Any], params: list[Tensor], grads: list[Tensor], state: dict[str, list[Tensor]],
                scalars: dict[str, Tensor], lr: float | Tensor, capture: bool, layout: Layout | None) -> GroupUpdate:
        eps, wd = hp["eps"], hp["weight_decay"]
        beta2 = hp["betas"][1]
        one_minus_beta1, one_minus_beta2 = hp["one_minus_betas"]
        exp_avgs, exp_avg_sqs = state["exp_avg"], state["exp_avg_sq"]
        lerp_(exp_avgs, grads, one_minus_beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        addcmul_(exp_avg_sqs, grads, grads, one_minus_beta2)
        weight_norm = batched_norms(params)
        # One new tensor per parameter (as AdamW), turned in place into u / s: on the CPU a fresh
        # allocation costs several in-place passes (page faults), so ``1/x · m`` beats ``m / x`` here.
        directions = torch._foreach_sqrt(exp_avg_sqs)
        # With bias correction, u = s · (m / (√v + ε·√c2) + (wd / s) · w): the docstring's u in fewer passes.
        scale = scalars.get("scale")
        add_constant_(directions, scalars["eps"] if scale is not None else eps)
        torch._foreach_reciprocal_(directions)
        torch._foreach_mul_(directions, exp_avgs)  # u / s, less the decay
        if not is_zero(wd) and scale is None:
            add_scaled_(directions, params, wd)
        elif not is_zero(wd):
            torch._foreach_addcmul_(directions, params, spread(scalars["decay"].expand(len(params)), params, layout))
        update_norm = batched_norms(directions) if scale is None else batched_norms(directions) * scale
        trust, extras = cls._ratio(hp, scalars, weight_norm, update_norm)
        rows = torch.stack([trust, weight_norm, update_norm])
        # The ratios are read back from the stored observables: compiled, Inductor would otherwise inline the
        # ratio's formula (divisions, comparisons) into every iteration of every tensor's update loop.
        applied = spread(rows[0] if scale is None else rows[0] * scale, directions, layout)
        return GroupUpdate(rows, extras, descend(params, directions, applied, lr, capture))
