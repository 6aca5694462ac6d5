"""LAMBC: LAMB with the trust ratio clipped to [clip_min, clip_max] (Fong, Chen, Chen 2020)."""

from __future__ import annotations

from typing import Any

from tvlars.optim._trust import ParamsT, extends
from tvlars.optim.lamb import LAMB


class LAMBC(LAMB):
    r"""LAMB whose trust ratio is clipped: ``τ_t ← clamp(τ_t, clip_min, clip_max)``; ``clip_max = 1`` by default.

    Source: J. Fong, S. Chen, K. Chen, "Improving Layer-wise Adaptive Rate Methods using Trust Ratio
    Clipping", arXiv 2011.13584 (2020); official code ``github.com/jeffrey-fong/LAMBC``. The update is
    :class:`LAMB`'s with its clipping options (after the zero-norm fallback ``τ = 1``; tensors of a group
    with ``adapt=False`` keep ``τ = 1`` unclipped)::

        w_{t+1} = w_t − lr · clamp(τ_t, clip_min, clip_max) · u_t

    Defaults follow the official code's final version: an upper bound only (``clip_max = 1``, the best
    bound of the authors' CIFAR-10 sweep over {1, 3, 5, 10}; the lower bound was removed before the
    paper). Their code also has no bias correction and no weight-norm clamp: pass
    ``bias_correction=False`` to match it (the class keeps LAMB's defaults so that LAMBC − LAMB is the
    clipping alone).

    Args:
        params, lr: as :class:`LAMB`; all of LAMB's other arguments are accepted (keyword-only).
        clip_max: upper bound (> 0) of the trust ratio, or ``None``.
    """

    @extends(LAMB)
    def __init__(self, params: ParamsT, lr: float, *, clip_max: float | None = 1.0, **options: Any) -> None:
        super().__init__(params, lr, clip_max=clip_max, **options)
