"""LARS: layer-wise adaptive rate scaling with momentum (You, Gitman, Ginsburg 2017)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from tvlars.optim._trust import (
    GroupUpdate,
    Layout,
    ParamsT,
    TrustRatioOptimizer,
    add_scaled,
    add_scaled_,
    batched_norms,
    check_bool,
    check_range,
    descend,
    is_zero,
    spread,
)
from tvlars.optim.stability import Preconditioner, first_group, relative_to_lr


class LARS(TrustRatioOptimizer):
    r"""LARS in the convention of the FAIR Barlow Twins code, which the TVLARS paper's code adapts.

    Source: Y. You, I. Gitman, B. Ginsburg, "Large Batch Training of Convolutional Networks",
    arXiv 1708.03888 (2017); update rule as in ``facebookresearch/barlowtwins`` ``LARS`` and the TVLARS
    authors' ``opt/lars.py``. For every tensor ``w`` with gradient ``g`` (``t`` = step)::

        u_t = g_t + wd · w_t                                  (decay only in groups with wd > 0)
        r_t = η · ‖w_t‖ / ‖u_t‖   if the group adapts and ‖w_t‖ > 0 and ‖u_t‖ > 0,   else 1
        b_t = m · b_{t-1} + r_t · u_t                          (b_0 = 0: no dampening)
        w_{t+1} = w_t − lr · b_t                               (Nesterov: lr · (r_t·u_t + m·b_t))

    The denominator is ``‖g + wd·w‖`` (FAIR / paper code), not ``‖g‖ + wd·‖w‖`` (Bolts, timm). Tensors
    of a group with ``adapt=False`` (the paper's biases and normalisation weights, see
    :func:`tvlars.optim.param_groups`) take the plain momentum step ``r = 1``. Zero-norm tensors in an
    adapting group (a zero-initialised bias or BN γ) also get ``r = 1``, i.e. the raw base LR, as in
    the paper's code. Gradients are not modified.

    Implementation: multi-tensor (``torch._foreach_*``) kernels and one batched norm per group, or the
    same compiled (``fused``, see :class:`~tvlars.optim._trust.TrustRatioOptimizer`); no host
    synchronisation.

    Observables (:meth:`trust_stats`): ``trust_ratio`` = ``r_t`` actually applied to ``u_t``;
    ``update_norm`` = ``‖u_t‖`` (before scaling); ``weight_norm`` = ``‖w_t‖``.

    Args:
        params: tensors or param groups (keys ``weight_decay``, ``adapt``, ``lr`` ... override defaults).
        lr: learning rate ``lr`` (≥ 0); read from each group at every step, so schedules may change it.
        momentum: ``m`` in [0, 1).
        weight_decay: L2 coefficient ``wd`` (≥ 0), added to the gradient before the norm.
        trust_coefficient: ``η`` (> 0); 0.001 in the paper's code and FAIR's.
        nesterov: use Nesterov momentum (needs ``momentum > 0``).
        fused: compile the step (``None``: on CUDA only).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        nesterov: bool = False,
        *,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        nesterov=nesterov)
        super().__init__(params, defaults, fused)

    def preconditioner(self) -> Preconditioner | None:
        r"""The last step as ``w ← w − lr · P · b`` (:mod:`tvlars.optim.stability`): ``P = r`` per tensor, the
        trust ratio actually applied (``η`` and TVLARS's ``φ(t)`` included; 1 where the group does not adapt), with
        heavy-ball momentum on ``r · u`` without dampening (threshold ``(2 + 2m)/lr``; Nesterov
        ``(2 + 2m)/((1 + 2m) lr)``). ``None`` before the first step."""
        stats = self.trust_stats()
        if not stats:
            return None
        ratios = list(stats["trust_ratio"].nan_to_num(0.0).unbind())  # NaN: no gradient at the last step, not moved
        group = first_group(self)
        return relative_to_lr(self, ratios, group["momentum"], nesterov=group["nesterov"])

    def _check_hyperparameters(self, hp: Mapping[str, Any]) -> None:
        super()._check_hyperparameters(hp)
        check_range("momentum", hp["momentum"], 0.0, 1.0, high_open=True)
        check_range("trust_coefficient", hp["trust_coefficient"], 0.0, low_open=True)
        check_bool("nesterov", hp["nesterov"])
        if hp["nesterov"] and hp["momentum"] == 0:
            raise ValueError("nesterov=True needs momentum > 0 (got momentum=0)")

    @classmethod
    def _state_keys(cls, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()

    @classmethod
    def _trust_options(cls, hp: Mapping[str, Any], scalars: dict[str, Tensor],
                       like: Tensor) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"coefficient": hp["trust_coefficient"]}, {}

    @classmethod
    def _update(cls, hp: Mapping[str, Any], params: list[Tensor], grads: list[Tensor], state: dict[str, list[Tensor]],
                scalars: dict[str, Tensor], lr: float | Tensor, capture: bool, layout: Layout | None) -> GroupUpdate:
        momentum, wd = hp["momentum"], hp["weight_decay"]
        updates = grads if is_zero(wd) else add_scaled(grads, params, wd)
        weight_norm, update_norm = batched_norms(params), batched_norms(updates)
        ratio, extras = cls._ratio(hp, scalars, weight_norm, update_norm)
        rows = torch.stack([ratio, weight_norm, update_norm])
        ratios = spread(rows[0], updates, layout)  # from the stored rows: see LAMB._update
        if is_zero(momentum):
            directions = descend(params, updates, ratios, lr, capture)
        elif hp["nesterov"]:
            bufs = state["momentum_buffer"]
            scaled = torch._foreach_mul(updates, ratios)
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, scaled)
            add_scaled_(scaled, bufs, momentum)
            directions = descend(params, scaled, None, lr, capture)
        else:
            bufs = state["momentum_buffer"]
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_addcmul_(bufs, updates, ratios)
            directions = descend(params, bufs, None, lr, capture)
        return GroupUpdate(rows, extras, directions)
