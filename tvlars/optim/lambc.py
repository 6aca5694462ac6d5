"""LAMBC: LAMB with the trust ratio clipped to [clip_min, clip_max] (Fong, Chen, Chen 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from tvlars.optim._trust import ParamsT, TrustRatioOptimizer, check_range
from tvlars.optim.lamb import LAMB, as_betas


class LAMBC(LAMB):
    r"""LAMB whose trust ratio is clipped: ``τ_t ← clamp(τ_t, clip_min, clip_max)``.

    Source: J. Fong, S. Chen, K. Chen, "Improving Layer-wise Adaptive Rate Methods using Trust Ratio
    Clipping", arXiv 2011.13584 (2020); official code ``github.com/jeffrey-fong/LAMBC``. The update is
    :class:`LAMB`'s with ``τ_t`` (after the zero-norm fallback ``τ = 1``) clamped; tensors of a group
    with ``adapt=False`` keep ``τ = 1`` unclipped::

        w_{t+1} = w_t − lr · clamp(τ_t, clip_min, clip_max) · u_t

    Defaults follow the official code's final version: an upper bound only (``clip_max = 1``, the best
    bound of the authors' CIFAR-10 sweep over {1, 3, 5, 10}; the lower bound was removed before the
    paper). Their code also has no bias correction and no weight-norm clamp: pass
    ``bias_correction=False`` to match it (the class keeps LAMB's defaults so that LAMBC − LAMB is the
    clipping alone).

    Observables: as :class:`LAMB`, with ``trust_ratio`` the clipped ``τ_t``.

    Args:
        params, lr, betas, eps, weight_decay, bias_correction, weight_norm_clamp: as :class:`LAMB`.
        clip_max: upper bound (> 0) of the trust ratio, or ``None``.
        clip_min: lower bound (≥ 0, ≤ ``clip_max``) of the trust ratio, or ``None``.
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
        clip_max: float | None = 1.0,
        clip_min: float | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=as_betas(betas),
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            weight_norm_clamp=weight_norm_clamp,
            clip_max=clip_max,
            clip_min=clip_min,
        )
        TrustRatioOptimizer.__init__(self, params, defaults)  # LAMB's defaults plus the clip bounds

    def _check_hyperparameters(self, hp: Any) -> None:
        super()._check_hyperparameters(hp)
        check_range("clip_max", hp["clip_max"], 0.0, low_open=True, optional=True)
        check_range("clip_min", hp["clip_min"], 0.0, optional=True)
        if hp["clip_min"] is not None and hp["clip_max"] is not None and hp["clip_min"] > hp["clip_max"]:
            raise ValueError(f"clip_min must be <= clip_max (got {hp['clip_min']} > {hp['clip_max']})")

    def _trust_options(self, group: dict[str, Any], like: Tensor) -> dict[str, Any]:
        clip = {"clip_min": group["clip_min"], "clip_max": group["clip_max"]}
        return {**super()._trust_options(group, like), **clip}
