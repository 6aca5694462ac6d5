"""Shared core of the layer-wise trust-ratio optimizers (LARS, TVLARS, LAMB, LAMBC).

* :func:`trust_ratio`, the one formula every optimizer uses, written on whole vectors of per-tensor
  norms so that it costs a handful of tiny kernels per parameter group and never reads a value back
  to the host (zero norms are handled with ``torch.where``, not a Python ``if``)::

      r_i = clip( where(‖w_i‖ > 0 and ‖u_i‖ > 0,
                        coefficient · scale · min(‖w_i‖, w_max) / min(‖u_i‖, u_max),
                        1),
                  clip_min, clip_max)

* :class:`TrustRatioOptimizer`, the base class. It validates hyper-parameters (also per group), gathers
  the tensors that have gradients, creates the state (zero buffers, the group's step counter) and
  records the observables of :meth:`TrustRatioOptimizer.trust_stats`; a subclass writes the update of
  one group as a pure function of tensors, :meth:`TrustRatioOptimizer._update`, which runs either
  eagerly (multi-tensor ``torch._foreach_*`` kernels) or compiled (``fused``).

**Per-tensor scalars and CUDA's multi-tensor kernels.** The trust ratio is one scalar per tensor. On the
CPU a foreach op is a loop over the tensors, so a list of 0-d ratios (``ratio.unbind()``) costs nothing.
CUDA's fused multi-tensor kernels need every tensor list of an op to match pairwise in shape, strides
and dtype; a list of 0-d tensors beside the parameters sends the op to its per-tensor fallback, one
kernel per tensor (≈ 120–190 launches more per ResNet-18 step). Two answers, chosen per step:

* the **fused** step (default on CUDA): ``torch.compile(fullgraph=True)`` of ``_update``; Inductor
  reads each 0-d ratio inside the generated kernels, so nothing is materialised. Its numeric hyper-parameters
  arrive as 0-d device tensors (:func:`device_hyperparameters`), so one graph serves every value;
* the **eager** step off the CPU (``fused=False``): :func:`spread` writes the ratios into one flat buffer
  with a single ``repeat_interleave`` (``output_size`` given: no sync) and views it with each
  parameter's shape and strides, so every list matches and the fast path applies. It costs one write
  and one extra read of a parameter-sized buffer per use, against ~60 launches saved per op.

On the CPU the eager step keeps the 0-d lists. ``dense_scales`` decides, by device.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]
_STAT_KEYS = ("trust_ratio", "weight_norm", "update_norm")
STEP_DTYPE = torch.float32  # the group's step counter: exact for integers up to 2^24


def accumulation_dtype(tensors: Iterable[Tensor]) -> torch.dtype:
    """float64 if any tensor is float64, else float32: the precision of norms and per-group scalars."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def batched_norms(tensors: list[Tensor]) -> Tensor:
    """L2 norm of every tensor in ``tensors`` as one vector (one multi-tensor reduction).

    Accumulated in :func:`accumulation_dtype`, so bf16/fp16 tensors get exact-enough norms. Compiled for the
    CPU, one reduction per tensor instead: Inductor runs ``_foreach_norm`` as an opaque call on materialised
    inputs, while it fuses a plain norm with the ops that make its input (LARS's ``g + wd·w`` is then never
    stored; 2.5× faster). On CUDA the opaque call stays: one launch, where Inductor would launch one reduction
    kernel per tensor (a choice by reasoning, not yet measured on a GPU).
    """
    dtype = accumulation_dtype(tensors)
    if torch.compiler.is_compiling() and tensors[0].device.type == "cpu":
        return torch.stack([torch.linalg.vector_norm(t, dtype=dtype) for t in tensors])
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))


def trust_ratio(
    weight_norm: Tensor,
    update_norm: Tensor,
    *,
    coefficient: float | Tensor = 1.0,
    scale: Tensor | float | None = None,
    weight_norm_max: float | Tensor | None = None,
    update_norm_max: float | Tensor | None = None,
    clip_min: float | Tensor | None = None,
    clip_max: float | Tensor | None = None,
) -> Tensor:
    """Per-tensor trust ratios from vectors of weight norms ``‖w‖`` and update norms ``‖u‖``.

    ``r = coefficient · scale · min(‖w‖, weight_norm_max) / min(‖u‖, update_norm_max)`` where both
    (clamped) norms are positive, else the fallback ``r = 1`` (not multiplied by ``coefficient`` or
    ``scale``); finally ``r`` is clamped to ``[clip_min, clip_max]`` (fallback included). ``None``
    disables the corresponding clamp or factor. Any number may be a 0-d tensor (the fused step's).

    * LARS: ``coefficient = η``; TVLARS adds ``scale = φ(t)`` and optional norm clamps.
    * LAMB: ``coefficient = 1`` and optional ``weight_norm_max``; LAMBC adds ``clip_min``/``clip_max``.
    """
    if weight_norm_max is not None:
        weight_norm = weight_norm.clamp(max=weight_norm_max)
    if update_norm_max is not None:
        update_norm = update_norm.clamp(max=update_norm_max)
    ratio = weight_norm / update_norm
    if isinstance(coefficient, Tensor) or coefficient != 1.0:
        ratio = ratio * coefficient
    if scale is not None:
        ratio = ratio * scale
    ratio = torch.where((weight_norm > 0) & (update_norm > 0), ratio, torch.ones_like(ratio))
    if clip_min is not None or clip_max is not None:
        ratio = ratio.clamp(min=clip_min, max=clip_max)
    return ratio


# --------------------------------------------------------------------------------------- per-tensor scalars
@dataclass(frozen=True)
class Layout:
    """Where each tensor of a list sits in one flat buffer: the ``repeats`` of :func:`spread` (a device
    tensor of element counts) and, per tensor, the ``(size, stride, offset)`` of its view."""

    repeats: Tensor
    total: int
    views: tuple[tuple[torch.Size, tuple[int, ...], int], ...]

    @classmethod
    def of(cls, tensors: list[Tensor]) -> Layout:
        """The layout of ``tensors`` (one small host-to-device copy: build it once and keep it)."""
        numels = [t.numel() for t in tensors]
        offsets = [0, *itertools.accumulate(numels)][:-1]
        # a dense tensor's own strides (channels-last included); a non-dense one gets contiguous strides
        strides = [torch.empty_like(t, device="meta").stride() for t in tensors]
        views = tuple((t.shape, s, o) for t, s, o in zip(tensors, strides, offsets, strict=True))
        repeats = torch.tensor(numels, dtype=torch.long, device=tensors[0].device)
        return cls(repeats, sum(numels), views)


def dense_scales(device: torch.device) -> bool:
    """Whether the eager step gives per-tensor scalars as full tensors (:func:`spread`) on ``device``:
    everywhere but the CPU, whose foreach ops loop over the tensors anyway (see the module docstring)."""
    return device.type != "cpu"


def spread(values: Tensor, like: list[Tensor], layout: Layout | None) -> list[Tensor]:
    """``values[i]`` as the multiplier of ``like[i]`` in a foreach op.

    ``layout=None``: 0-d tensors (``values.unbind()``; the CPU and the compiled step). Otherwise tensors
    with ``like[i]``'s shape, strides and dtype, views of one buffer filled by one ``repeat_interleave``.
    """
    if layout is None:
        return list(values.unbind())
    flat = values.to(like[0].dtype).repeat_interleave(layout.repeats, output_size=layout.total)
    return [flat.as_strided(size, stride, offset) for size, stride, offset in layout.views]


def descend(params: list[Tensor], directions: list[Tensor], scales: list[Tensor] | None, lr: float | Tensor,
            capture: bool) -> list[Tensor] | None:
    """``w ← w − lr · s · d`` for each tensor (``scales=None``: ``s = 1``); with ``capture``, return the
    directions ``s · d`` instead and leave the parameters alone. ``lr`` is a float (eager) or a 0-d
    tensor (the compiled step, where Inductor fuses the extra product)."""
    if capture:
        return directions if scales is None else torch._foreach_mul(directions, scales)
    if isinstance(lr, Tensor):
        directions, lr = torch._foreach_mul(directions, lr), 1.0
    if scales is None:
        torch._foreach_add_(params, directions, alpha=-lr)
    else:
        torch._foreach_addcmul_(params, directions, scales, value=-lr)
    return None


# ----------------------------------------------------------------------------- hyper-parameters as tensors
Number = float | Tensor  # a hyper-parameter: a Python number (eager step) or a 0-d device tensor (fused step)


def device_hyperparameters(hp: Mapping[str, Any], cache: dict[str, tuple[Any, Tensor]], dtype: torch.dtype,
                           device: torch.device) -> dict[str, Any]:
    """``hp`` for the compiled step: every non-zero number as a 0-d ``dtype`` tensor on ``device`` (tuples element
    by element), so that Dynamo guards on its dtype and device, not on its value, and one graph serves every
    configuration. Zeros, ``None`` and booleans stay Python values: they choose the update's branches (which
    state exists, which terms are added), see :func:`is_zero`. What the update derives from the numbers is derived
    on the host first (:meth:`TrustRatioOptimizer._derived`): ``1 − β2`` of a float32 ``β2`` would lose digits.
    ``cache`` maps ``key`` (``key[i]`` inside a tuple) to ``(value, tensor)``; a tensor is refilled in place (no
    sync) when its value changes. (Not float64: Dynamo guards on the value of a 0-d float64 CPU tensor.)"""

    def convert(key: str, value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(convert(f"{key}[{i}]", v) for i, v in enumerate(value))
        if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
            return value
        if key not in cache:
            cache[key] = (value, torch.full((), value, dtype=dtype, device=device))
        elif cache[key][0] != value:
            cache[key] = (value, cache[key][1].fill_(value))
        return cache[key][1]

    return {key: convert(key, value) for key, value in hp.items()}


def is_zero(value: Number) -> bool:
    """Whether a hyper-parameter is zero, decided without reading a tensor: :func:`device_hyperparameters` keeps
    zeros as Python numbers, so a 0-d tensor is never zero."""
    return not isinstance(value, Tensor) and value == 0


def add_scaled(xs: list[Tensor], ys: list[Tensor], alpha: Number) -> list[Tensor]:
    """``x + alpha · y`` for each pair: a float as the foreach ``alpha``, a 0-d tensor as a product (fused)."""
    if isinstance(alpha, Tensor):
        return torch._foreach_add(xs, torch._foreach_mul(ys, alpha))
    return torch._foreach_add(xs, ys, alpha=alpha)


def add_scaled_(xs: list[Tensor], ys: list[Tensor], alpha: Number) -> None:
    """In place: ``x ← x + alpha · y`` (see :func:`add_scaled`)."""
    if isinstance(alpha, Tensor):
        torch._foreach_add_(xs, torch._foreach_mul(ys, alpha))
    else:
        torch._foreach_add_(xs, ys, alpha=alpha)


def add_constant_(xs: list[Tensor], value: Number) -> None:
    """In place: ``x ← x + value``. ``other=`` selects the Tensor overload for a tensor (the Scalar one would
    read it on the host)."""
    if isinstance(value, Tensor):
        torch._foreach_add_(xs, other=value)
    else:
        torch._foreach_add_(xs, value)


def lerp_(xs: list[Tensor], ys: list[Tensor], weight: Number) -> None:
    """In place: ``x ← x + weight · (y − x)``; a tensor weight goes through the List overload (fused step)."""
    torch._foreach_lerp_(xs, ys, [weight] * len(xs) if isinstance(weight, Tensor) else weight)


def addcmul_(xs: list[Tensor], ys: list[Tensor], zs: list[Tensor], value: Number) -> None:
    """In place: ``x ← x + value · y · z``; a tensor value multiplies ``z`` first (fused step)."""
    if isinstance(value, Tensor):
        torch._foreach_addcmul_(xs, ys, torch._foreach_mul(zs, value))
    else:
        torch._foreach_addcmul_(xs, ys, zs, value=value)


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


def check_bool(name: str, value: Any, optional: bool = False) -> None:
    """Raise ``ValueError("<name> must be True or False (got <value>)")`` unless ``value`` is a bool
    (or ``None`` with ``optional``)."""
    if not (isinstance(value, bool) or (optional and value is None)):
        raise ValueError(f"{name} must be True or False{' or None' if optional else ''} (got {value!r})")


# ---------------------------------------------------------------------------------------------- variants
def extends(parent: Callable[..., Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator for the ``__init__(self, params, lr, *, <own options>, **options)`` of a variant of ``parent``.

    ``options`` are ``parent``'s other arguments: the call is checked against them (an unknown name is a
    ``TypeError``) and they arrive completed with ``parent``'s defaults. The signature that ``inspect``,
    ``help()`` and the config checks see lists the variant's own arguments, then ``parent``'s others
    (keyword-only), so a variant writes only what it adds or changes and nothing is listed twice.
    """
    inherited = list(inspect.signature(parent).parameters.values())

    def decorate(init: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(init).parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in own}
        signature = inspect.Signature(
            [*own, *(p.replace(kind=p.KEYWORD_ONLY) for p in inherited if p.name not in names and p.name != "self")])

        @functools.wraps(init)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{init.__qualname__.split('.')[0]}: {exc}") from None
            bound.apply_defaults()
            init(*bound.args, **bound.kwargs)

        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        return wrapper

    return decorate


# ---------------------------------------------------------------------------------------------- base
class GroupUpdate(NamedTuple):
    """What :meth:`TrustRatioOptimizer._update` returns for one group."""

    rows: Tensor  # 3 × n observables: trust ratio, ‖w‖, ‖u‖
    extras: dict[str, Tensor]  # 0-d observables of the group (TVLARS: "phi")
    directions: list[Tensor] | None  # with ``capture``: the scaled directions s·d, else None


@functools.cache
def _compiled(update: Callable[..., GroupUpdate]) -> Callable[..., GroupUpdate]:
    """``update`` compiled once per process: one graph, static shapes (one specialisation per group).

    ``realize_reads_threshold``: Inductor stores an intermediate read by more than this many inputs instead
    of recomputing it; LAMB's bias-corrected ``u`` reads six (m, v, g, w and two step scalars) and, stored, costs
    a parameter-sized buffer per step and an extra pass (2.5× slower on a CPU). Recomputing it where the
    update needs it is one more read of inputs the kernel streams anyway.
    """
    return torch.compile(update, fullgraph=True, dynamic=False, options={"realize_reads_threshold": 8})


class TrustRatioOptimizer(Optimizer):
    """Base class of the layer-wise trust-ratio optimizers; see the module docstring.

    Every group reads ``lr``, ``weight_decay`` and ``adapt`` (default ``True``); extra keys such as
    ``names`` are kept untouched. Each group keeps its step count ``t`` as ``group["step"]``, a float32
    0-d tensor on the group's device (saved by ``state_dict``). Parameters are assumed to live on one
    device (the observables of all groups are concatenated into one vector).

    ``fused``: ``True`` runs :meth:`_update` compiled (``torch.compile(fullgraph=True)``; the first step
    compiles, tens of seconds); ``False`` runs it eagerly; ``None`` (default) fuses on CUDA only. Both
    compute the same update and share ``state_dict``. The LR and the other numeric hyper-parameters reach
    the compiled step as device tensors refreshed in place (:func:`device_hyperparameters`), so neither a
    schedule nor a new configuration in the same process recompiles it; only a new structure does (a zero
    becoming non-zero, a flag, other tensor shapes). Should Dynamo still reach its
    ``torch._dynamo.config.recompile_limit`` for the update, this optimizer warns once and runs the eager step
    from then on.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any], fused: bool | None = None) -> None:
        check_bool("fused", fused, optional=True)
        defaults = {**defaults, "adapt": True}
        self._check_hyperparameters(defaults)
        super().__init__(params, defaults)
        self._hyperparameters = tuple(key for key in defaults if key != "lr")  # what ``_update`` reads
        self.fused = fused
        self._reset_observables()
        self._directions: list[Tensor] | None = None  # a list while :meth:`direction` runs
        self._lr_tensors: dict[int, Tensor] = {}  # group index -> the LR as a device tensor (fused step)
        self._hp_tensors: dict[int, dict[str, tuple[Any, Tensor]]] = {}  # group index -> device_hyperparameters' cache
        self._compile_failed = False  # Dynamo's recompile limit was hit: eager from then on
        self._layouts: dict[tuple[int, ...], Layout] = {}  # ids of a group's tensors -> their Layout

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Also runs in ``load_state_dict``: the observables of an earlier step no longer apply.
        super().__setstate__(state)
        self._reset_observables()

    def _reset_observables(self) -> None:
        # Mutated in place by ``step`` (not rebound): Dynamo replays container mutations of an optimizer
        # but drops attribute rebinding, so this keeps the observables when ``step`` itself is compiled.
        self._stats: list[tuple[int, Tensor | None, list[int] | None]] = []
        self._extra_stats: dict[str, Tensor] = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as :meth:`torch.optim.Optimizer.load_state_dict`, then move each group's tensors (the step
        count) to the group's parameter device as float32.

        ``Optimizer.load_state_dict`` moves the per-parameter state to each parameter's device but keeps
        group values as loaded; a checkpoint read with ``map_location="cpu"`` would leave the counter on
        the CPU beside CUDA parameters (a crash in LAMB's multi-tensor ops; TVLARS's φ on the CPU).
        The group values are copies (``Optimizer.load_state_dict`` deep-copies them), never the
        loaded dict's tensors.
        """
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            if group["params"]:
                device = group["params"][0].device
                for key, value in group.items():
                    if isinstance(value, Tensor):
                        group[key] = value.to(device=device, dtype=STEP_DTYPE)

    # --- hooks for subclasses ------------------------------------------------------------------
    def _check_hyperparameters(self, hp: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the first invalid hyper-parameter of ``hp`` (a group or defaults)."""
        check_range("lr", hp["lr"], 0.0)
        check_range("weight_decay", hp["weight_decay"], 0.0)
        check_bool("adapt", hp["adapt"])

    @classmethod
    def _state_keys(cls, hp: Mapping[str, Any]) -> tuple[str, ...]:
        """Names of the per-parameter state tensors a group with hyper-parameters ``hp`` needs (zeros first)."""
        return ()

    @classmethod
    def _derived(cls, hp: Mapping[str, Any]) -> dict[str, Any]:
        """Numbers :meth:`_update` reads that are functions of the hyper-parameters alone, added to ``hp`` on the
        host in double precision before either step runs (see :func:`device_hyperparameters`)."""
        return {}

    @classmethod
    def _step_scalars(cls, hp: Mapping[str, Any], step: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
        """The group's 0-d values that depend only on its step count ``t`` (after the increment), in ``dtype``:
        TVLARS's φ, LAMB's bias corrections. They are computed before :meth:`_update` and outside the
        compiled step: compiled in, Inductor would recompute them for every element of every tensor."""
        return {}

    @classmethod
    def _trust_options(cls, hp: Mapping[str, Any], scalars: dict[str, Tensor],
                       like: Tensor) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Keyword arguments of :func:`trust_ratio` for an adapting group (``scalars``: :meth:`_step_scalars`;
        ``like``: a norm vector), and the group's extra 0-d observables."""
        raise NotImplementedError

    @classmethod
    def _update(cls, hp: Mapping[str, Any], params: list[Tensor], grads: list[Tensor], state: dict[str, list[Tensor]],
                scalars: dict[str, Tensor], lr: float | Tensor, capture: bool, layout: Layout | None) -> GroupUpdate:
        """The update of one group, a function of tensors only (it runs eagerly or compiled).

        ``hp``: the group's hyper-parameters but ``lr``; ``state``: the buffers named by :meth:`_state_keys`,
        aligned with ``params``; ``scalars``: :meth:`_step_scalars`; ``lr``: see :func:`descend`;
        ``capture``: return the directions instead of writing the parameters (:meth:`direction`);
        ``layout``: for :func:`spread`. Writes the parameters only through :func:`descend`.
        """
        raise NotImplementedError

    @classmethod
    def _ratio(cls, hp: Mapping[str, Any], scalars: dict[str, Tensor], weight_norm: Tensor,
               update_norm: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The ratio applied to each tensor of a group (:func:`trust_ratio`, or 1 if it does not adapt) and
        the group's extra observables."""
        if not hp["adapt"]:
            return torch.ones_like(weight_norm), {}
        options, extras = cls._trust_options(hp, scalars, weight_norm)
        return trust_ratio(weight_norm, update_norm, **options), extras

    # --- the step ------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._check_hyperparameters(self.param_groups[-1])

    def _buffers(self, params: list[Tensor], key: str) -> list[Tensor]:
        """The state tensor ``key`` of each parameter, created as zeros on first use."""
        out = []
        for p in params:
            state = self.state[p]
            if key not in state:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            out.append(state[key])
        return out

    def _is_fused(self, device: torch.device) -> bool:
        if self._compile_failed:
            return False
        return self.fused if self.fused is not None else device.type == "cuda"

    def _update_group(self, index: int, group: dict[str, Any], params: list[Tensor],
                      grads: list[Tensor]) -> GroupUpdate:
        """Advance the group's step count, create what its update needs (state, step scalars, LR tensor,
        layout) and run it."""
        hp = {key: group[key] for key in self._hyperparameters}
        hp |= self._derived(hp)
        state = {key: self._buffers(params, key) for key in self._state_keys(hp)}
        if "step" not in group:
            group["step"] = torch.zeros((), dtype=STEP_DTYPE, device=params[0].device)
        scalars = self._step_scalars(hp, group["step"].add_(1.0), accumulation_dtype(params))
        capture = self._directions is not None
        device = params[0].device
        if self._is_fused(device):
            dtype = accumulation_dtype(params)
            if index not in self._lr_tensors:
                self._lr_tensors[index] = torch.zeros((), dtype=dtype, device=device)
            lr = self._lr_tensors[index].fill_(group["lr"])  # a device-side fill: no sync, no recompilation
            numbers = device_hyperparameters(hp, self._hp_tensors.setdefault(index, {}), dtype, device)
            try:
                return _compiled(type(self)._update)(numbers, params, grads, state, scalars, lr, capture, None)
            except torch._dynamo.exc.FailOnRecompileLimitHit:  # raised before the graph runs: nothing was written
                self._compile_failed = True
                warnings.warn(f"{type(self).__name__}: torch.compile reached torch._dynamo.config.recompile_limit "
                              f"({torch._dynamo.config.recompile_limit}) variants of the fused step in this process; "
                              "this optimizer runs the eager step from now on (same update, slower)", stacklevel=3)
        layout = None
        if dense_scales(device):
            key = tuple(map(id, params))
            if key not in self._layouts:
                self._layouts[key] = Layout.of(params)
            layout = self._layouts[key]
        return type(self)._update(hp, params, grads, state, scalars, group["lr"], capture, layout)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._stats.clear()
        self._extra_stats.clear()
        for index, group in enumerate(self.param_groups):
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
            update = self._update_group(index, group, params, grads)
            if self._directions is not None:
                assert update.directions is not None
                self._directions.extend(update.directions)
            self._extra_stats.update(update.extras)
            self._stats.append((size, update.rows.float(), None if len(positions) == size else positions))
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
            nan = group["params"][0].new_full((len(_STAT_KEYS),), math.nan, dtype=torch.float32)
            columns = [nan] * size
            if rows is not None:
                for column, i in zip(rows.unbind(1), positions or [], strict=True):
                    columns[i] = column
            pieces.append(torch.stack(columns, dim=1))
        table = torch.cat(pieces, dim=1)
        return {**dict(zip(_STAT_KEYS, table.unbind(0), strict=True)), **self._extra_stats}
