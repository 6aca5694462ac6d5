"""Shared core of the layer-wise trust-ratio optimizers (LARS, TVLARS, LAMB, LAMBC).

Two pieces live here:

* :func:`trust_ratio`, the one formula every optimizer uses, written on whole vectors of per-tensor
  norms so that it costs a handful of tiny kernels per parameter group and never reads a value back
  to the host (zero norms are handled with ``torch.where``, not a Python ``if``)::

      r_i = clip( where(‖w_i‖ > 0 and ‖u_i‖ > 0,
                        coefficient · scale · min(‖w_i‖, w_max) / min(‖u_i‖, u_max),
                        1),
                  clip_min, clip_max)

* :class:`TrustRatioOptimizer`, the base class: it validates hyper-parameters (also per group), gathers
  the tensors that have gradients, keeps the per-group step counter, creates zero-initialised state
  buffers, and records the per-tensor observables returned by :meth:`TrustRatioOptimizer.trust_stats`.

A subclass implements ``_update_group`` (the multi-tensor update of one group, returning its
observables) and ``_trust_options`` (the keyword arguments of :func:`trust_ratio` for one group).
Groups with ``adapt=False`` get ``r = 1`` without consulting ``_trust_options``. ``_update_group`` writes
the parameters only through ``_apply``, so :meth:`TrustRatioOptimizer.direction` can return the update
direction instead of applying it (a step-size tuner wrapped around the optimizer, :class:`tvlars.optim.CDAT`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]
_STAT_KEYS = ("trust_ratio", "weight_norm", "update_norm")


def batched_norms(tensors: list[Tensor]) -> Tensor:
    """L2 norm of every tensor in ``tensors`` as one vector (one multi-tensor reduction).

    Accumulated in float32 (float64 if any tensor is float64), so bf16/fp16 tensors get exact-enough norms.
    """
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))


def trust_ratio(
    weight_norm: Tensor,
    update_norm: Tensor,
    *,
    coefficient: float = 1.0,
    scale: Tensor | float | None = None,
    weight_norm_max: float | None = None,
    update_norm_max: float | None = None,
    clip_min: float | None = None,
    clip_max: float | None = None,
) -> Tensor:
    """Per-tensor trust ratios from vectors of weight norms ``‖w‖`` and update norms ``‖u‖``.

    ``r = coefficient · scale · min(‖w‖, weight_norm_max) / min(‖u‖, update_norm_max)`` where both
    (clamped) norms are positive, else the fallback ``r = 1`` (not multiplied by ``coefficient`` or
    ``scale``); finally ``r`` is clamped to ``[clip_min, clip_max]`` (fallback included). ``None``
    disables the corresponding clamp or factor.

    * LARS: ``coefficient = η``; TVLARS adds ``scale = φ(t)`` and optional norm clamps.
    * LAMB: ``coefficient = 1`` and optional ``weight_norm_max``; LAMBC adds ``clip_min``/``clip_max``.
    """
    if weight_norm_max is not None:
        weight_norm = weight_norm.clamp(max=weight_norm_max)
    if update_norm_max is not None:
        update_norm = update_norm.clamp(max=update_norm_max)
    ratio = weight_norm / update_norm
    if coefficient != 1.0:
        ratio = ratio * coefficient
    if scale is not None:
        ratio = ratio * scale
    ratio = torch.where((weight_norm > 0) & (update_norm > 0), ratio, torch.ones_like(ratio))
    if clip_min is not None or clip_max is not None:
        ratio = ratio.clamp(min=clip_min, max=clip_max)
    return ratio


# ---------------------------------------------------------------------------------------------- checks
def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    """Raise ``ValueError("<name> must be in <range> (got <value>)")`` unless ``value`` is in range.

    ``low_open``/``high_open`` make the corresponding end exclusive; ``optional`` also accepts ``None``.
    """
    if optional and value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if ok:
        return
    if low is not None and high is not None:
        rule = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        rule = f"{'>' if low_open else '>='} {low:g}"
    else:
        rule = f"{'<' if high_open else '<='} {high:g}"
    raise ValueError(f"{name} must be {rule}{' or None' if optional else ''} (got {value!r})")


def check_bool(name: str, value: Any) -> None:
    """Raise ``ValueError("<name> must be True or False (got <value>)")`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False (got {value!r})")


# ---------------------------------------------------------------------------------------------- base
class TrustRatioOptimizer(Optimizer):
    """Base class of the layer-wise trust-ratio optimizers; see the module docstring.

    Every group reads ``lr``, ``weight_decay`` and ``adapt`` (default ``True``); extra keys such as
    ``names`` are kept untouched. Parameters are assumed to live on one device (the observables of all
    groups are concatenated into one vector).
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        defaults = {**defaults, "adapt": True}
        self._check_hyperparameters(defaults)
        super().__init__(params, defaults)
        self._reset_observables()
        self._directions: list[Tensor] | None = None  # a list while :meth:`direction` runs

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Also runs in ``load_state_dict``: the observables of an earlier step no longer apply.
        super().__setstate__(state)
        self._reset_observables()

    def _reset_observables(self) -> None:
        # Mutated in place by ``step`` (not rebound): Dynamo replays container mutations of an optimizer
        # but drops attribute rebinding, so this keeps the observables under ``torch.compile``.
        self._stats: list[tuple[int, Tensor | None, list[int] | None]] = []
        self._extra_stats: dict[str, Tensor] = {}

    # --- hooks for subclasses ------------------------------------------------------------------
    def _check_hyperparameters(self, hp: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the first invalid hyper-parameter of ``hp`` (a group or defaults)."""
        check_range("lr", hp["lr"], 0.0)
        check_range("weight_decay", hp["weight_decay"], 0.0)
        check_bool("adapt", hp["adapt"])

    def _trust_options(self, group: dict[str, Any], like: Tensor) -> dict[str, Any]:
        """Keyword arguments of :func:`trust_ratio` for an adapting group (``like``: a norm vector)."""
        raise NotImplementedError

    def _update_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> Tensor:
        """Update ``params`` in place; return the ``3 × len(params)`` observables (ratio, ‖w‖, ‖u‖)."""
        raise NotImplementedError

    # --- helpers -------------------------------------------------------------------------------
    def _apply(self, params: list[Tensor], directions: list[Tensor], scales: list[Tensor] | tuple[Tensor, ...] | None,
               lr: float) -> None:
        """``w ← w − lr · s · d`` for each tensor (``scales=None``: ``s = 1``); inside :meth:`direction`,
        record ``s · d`` instead. The only place ``_update_group`` writes the parameters."""
        if self._directions is not None:
            self._directions.extend(directions if scales is None else torch._foreach_mul(directions, scales))
        elif scales is None:
            torch._foreach_add_(params, directions, alpha=-lr)
        else:
            torch._foreach_addcmul_(params, directions, scales, value=-lr)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._check_hyperparameters(self.param_groups[-1])

    def _trust(self, group: dict[str, Any], weight_norm: Tensor, update_norm: Tensor) -> Tensor:
        """The ratio applied to each tensor of ``group``: :func:`trust_ratio`, or 1 if not adapting."""
        if not group["adapt"]:
            return torch.ones_like(weight_norm)
        return trust_ratio(weight_norm, update_norm, **self._trust_options(group, weight_norm))

    @staticmethod
    def _next_step(group: dict[str, Any], like: Tensor) -> Tensor:
        """Increment the group's step counter (a float32 0-d tensor on ``like``'s device; t = 1 first)."""
        if "step" not in group:
            group["step"] = torch.zeros((), dtype=torch.float32, device=like.device)
        group["step"].add_(1.0)
        return group["step"]

    def _buffers(self, params: list[Tensor], key: str) -> list[Tensor]:
        """The state tensor ``key`` of each parameter, created as zeros on first use."""
        out = []
        for p in params:
            state = self.state[p]
            if key not in state:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            out.append(state[key])
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._stats.clear()
        self._extra_stats.clear()
        for group in self.param_groups:
            params, grads, positions = [], [], []
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
                positions.append(i)
            size = len(group["params"])
            if not params:
                self._stats.append((size, None, None))
                continue
            rows = self._update_group(group, params, grads).float()
            self._stats.append((size, rows, None if len(positions) == size else positions))
        return loss

    @torch.no_grad()
    def direction(self) -> list[Tensor | None]:
        """Everything :meth:`step` does with the current ``.grad`` except writing the parameters.

        The state advances as in :meth:`step` (momentum buffers, moments, step counts) and
        :meth:`trust_stats` describes this step. Returns, for every parameter in ``param_groups`` order,
        the descent direction ``D`` for which :meth:`step` would have done ``w ← w − lr · D`` (``None``
        for a parameter without gradient); the groups' ``lr`` is not used. A ``D`` may be a state buffer
        of the optimizer (LARS's momentum): read it, do not modify it.
        """
        self._directions = []
        try:
            self.step()
            captured = iter(self._directions)
        finally:
            self._directions = None
        return [None if p.grad is None else next(captured) for group in self.param_groups for p in group["params"]]

    def trust_stats(self) -> dict[str, Tensor]:
        """Per-tensor observables of the last :meth:`step`, as device tensors (no host sync).

        Keys ``"trust_ratio"``, ``"weight_norm"``, ``"update_norm"``: 1-D float32 tensors with one entry
        per parameter, in ``param_groups`` order (the groups' ``params`` lists concatenated); a
        parameter without a gradient at that step gets NaN. ``weight_norm`` is ``‖w‖`` before the
        step (unclamped); ``update_norm`` is ``‖u‖``, the norm of the update direction before the trust
        ratio scales it (unclamped); ``trust_ratio`` is the multiplier actually applied to ``u`` (each
        optimizer's docstring says exactly what it includes), 1 for tensors of non-adapting groups and
        for the zero-norm fallback (LAMBC then clips it). Optimizers may add keys (TVLARS: ``"phi"``,
        a 0-d tensor). Empty before the first step and right after ``load_state_dict``.
        """
        if not self._stats:
            return {}
        pieces = []
        for group, (size, rows, positions) in zip(self.param_groups, self._stats, strict=True):
            if rows is not None and positions is None:
                pieces.append(rows)
                continue
            if size == 0:
                continue
            device = group["params"][0].device
            nan = torch.full((len(_STAT_KEYS),), math.nan, dtype=torch.float32, device=device)
            columns = [nan] * size
            if rows is not None:
                for column, i in zip(rows.unbind(1), positions or [], strict=True):
                    columns[i] = column
            pieces.append(torch.stack(columns, dim=1))
        table = torch.cat(pieces, dim=1)
        return {**dict(zip(_STAT_KEYS, table.unbind(0), strict=True)), **self._extra_stats}
