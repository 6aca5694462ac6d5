"""Shared cases for the optimizer tests: each fast optimizer paired with its per-tensor reference."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils._python_dispatch import TorchDispatchMode

from tests.optim.reference import ReferenceLAMB, ReferenceLARS, tvlars_phi
from tvlars.optim import LAMB, LAMBC, LARS, TVLARS
from tvlars.paths import CONFIG_DIR

Factory = Callable[[list[dict[str, Any]]], Optimizer]
PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "optimizer").glob("*.yaml"))

_TV = dict(lam=0.05, alpha=1.0, delay_steps=20, gamma_min=0.01)
# name -> (fast optimizer, its per-tensor reference), both built from the same param groups
CASES: dict[str, tuple[Factory, Factory]] = {
    "lars": (lambda g: LARS(g, lr=0.5), lambda g: ReferenceLARS(g, lr=0.5)),
    "lars_nesterov": (
        lambda g: LARS(g, lr=0.5, momentum=0.8, nesterov=True),
        lambda g: ReferenceLARS(g, lr=0.5, momentum=0.8, nesterov=True),
    ),
    "lars_no_momentum": (lambda g: LARS(g, lr=0.5, momentum=0.0), lambda g: ReferenceLARS(g, lr=0.5, momentum=0.0)),
    "tvlars": (
        lambda g: TVLARS(g, lr=0.5, norm_clamp=3.0, **_TV),
        lambda g: ReferenceLARS(g, lr=0.5, phi=partial(tvlars_phi, **_TV), norm_clamp=3.0),
    ),
    "lamb": (lambda g: LAMB(g, lr=0.01), lambda g: ReferenceLAMB(g, lr=0.01)),
    "lamb_official": (
        lambda g: LAMB(g, lr=0.01, bias_correction=False, weight_norm_clamp=2.0),
        lambda g: ReferenceLAMB(g, lr=0.01, bias_correction=False, weight_norm_clamp=2.0),
    ),
    "lambc": (
        lambda g: LAMBC(g, lr=0.01, clip_min=0.05, clip_max=0.5),
        lambda g: ReferenceLAMB(g, lr=0.01, clip_min=0.05, clip_max=0.5),
    ),
}
FAST_CASES = {name: fast for name, (fast, _) in CASES.items()}

# Shapes and initial values: conv and linear weights (one with a norm above the clamps), a zero-initialised
# matrix (zero-norm fallback in an adapting group), zero biases and unit BN weights.
_TENSORS: list[tuple[tuple[int, ...], str]] = [
    ((6, 4, 3, 3), "normal"),
    ((10, 6), "large"),
    ((4, 4), "zeros"),
    ((6,), "zeros"),
    ((6,), "ones"),
    ((10,), "normal"),
]


def make_params(dtype: torch.dtype = torch.float32, seed: int = 0) -> list[nn.Parameter]:
    """Fresh parameters (always the same values for a given seed)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape, kind in _TENSORS:
        value = {"normal": lambda s: torch.randn(s, generator=gen),
                 "large": lambda s: 20 * torch.randn(s, generator=gen),
                 "zeros": torch.zeros, "ones": torch.ones}[kind](shape)
        out.append(nn.Parameter(value.to(dtype)))
    return out


def make_groups(params: list[nn.Parameter], weight_decay: float = 0.01) -> list[dict[str, Any]]:
    """The paper's two groups by hand; the adapting group omits ``adapt`` (it must default to True)."""
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "adapt": False},
    ]


def set_random_grads(params: list[nn.Parameter], gen: torch.Generator, skip: int | None = None) -> None:
    """Random gradients of varying scale; parameter ``skip`` gets none (``grad = None``)."""
    for i, p in enumerate(params):
        if i == skip:
            p.grad = None
            continue
        scale = 10.0 ** torch.empty(()).uniform_(-2, 1, generator=gen)
        p.grad = (scale * torch.randn(p.shape, generator=gen)).to(p.dtype)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` (absolute error when ``b`` is 0)."""
    diff = (a.double() - b.double()).norm().item()
    scale = b.double().norm().item()
    return diff / scale if scale > 0 else diff


def tiny_bn_net(seed: int = 0) -> nn.Module:
    """A small conv net with BatchNorm (so 1-D weights exist) for 1×28×28 inputs."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def quartic_closure(optimizer: Optimizer, params: list[nn.Parameter]) -> Callable[..., torch.Tensor]:
    """A closure on ``Σ (w − 1)² (1 + w²)`` (curved, so CDAT's Hessian-vector product is not trivial)."""

    def closure(create_graph: bool = False) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = sum(((p - 1) ** 2 * (1 + p**2)).sum() for p in params)
        loss.backward(create_graph=create_graph)
        return loss

    return closure


def train_step(optimizer: Optimizer, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One cross-entropy step, through a closure for optimizers that need one (CDAT)."""

    def closure(create_graph: bool = False) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward(create_graph=create_graph)
        return loss

    if getattr(optimizer, "needs_closure", False):
        optimizer.step(closure)
    else:
        closure()
        optimizer.step()


class ForeachListsMatch(TorchDispatchMode):
    """Fail when a ``torch._foreach_*`` op gets tensor lists that differ at some position in shape, strides
    (over dimensions of size > 1), dtype or device: CUDA's multi-tensor fast path needs them equal and
    otherwise launches one kernel per tensor (e.g. a list of 0-d ratios beside the parameters)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func.__name__.startswith("_foreach_"):
            lists = [a for a in (*args, *kwargs.values()) if isinstance(a, (list, tuple)) and a
                     and all(isinstance(t, torch.Tensor) for t in a)]
            for tensors in zip(*lists, strict=True):
                first = tensors[0]
                for other in tensors[1:]:
                    same = (other.shape == first.shape and other.dtype == first.dtype and other.device == first.device
                            and all(a == b for a, b, n in zip(other.stride(), first.stride(), first.shape, strict=True)
                                    if n > 1))
                    assert same, (f"{func}: {tuple(first.shape)} {first.dtype} {first.stride()} beside "
                                  f"{tuple(other.shape)} {other.dtype} {other.stride()}")
        return func(*args, **kwargs)
