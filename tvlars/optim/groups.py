"""Parameter groups in the paper's convention: 1-D tensors get no weight decay and no adaptation."""

from __future__ import annotations

from typing import Any

from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into the two groups the paper's code uses.

    Tensors with ``ndim <= 1`` (biases, normalisation weights) go into a group with
    ``weight_decay=0.0, adapt=False``; every other tensor gets ``weight_decay`` and ``adapt=True``.
    Each group also carries ``names`` (the parameter names, in order) so per-layer statistics can be
    labelled. Empty groups are dropped.
    """
    decayed: list[tuple[str, nn.Parameter]] = []
    excluded: list[tuple[str, nn.Parameter]] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (excluded if p.ndim <= 1 else decayed).append((name, p))
    groups = [
        {"params": [p for _, p in decayed], "names": [n for n, _ in decayed],
         "weight_decay": weight_decay, "adapt": True},
        {"params": [p for _, p in excluded], "names": [n for n, _ in excluded],
         "weight_decay": 0.0, "adapt": False},
    ]
    return [g for g in groups if g["params"]]
