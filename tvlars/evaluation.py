"""What evaluation needs besides the task's eval step: BatchNorm statistics that match the weights (precise BN),
and running code without touching training.

**Precise BN** (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", §3): after few large-batch steps the running
statistics (an EMA with momentum 0.1) lag far behind the weights, so eval-mode accuracy measures the lag, not the
optimizer. :func:`recalibrated` recomputes them over ``N`` training batches, weights untouched: every BatchNorm layer
runs in train mode and normalises each batch with that batch's statistics (as in training), and records the exact
population mean and unbiased variance of its inputs over all ``N`` batches (Chan et al.'s pairwise combination,
float64). In a process group each batch's statistics are all-reduced (the global batch, as SyncBatchNorm does), so
1 and ``W`` processes give the same statistics for the same global batches. No host synchronisation.

Written here rather than with ``torch.optim.swa_utils.update_bn``: that averages per-batch variances (not the
population variance), does not reduce across processes, and feeds ``model(input)`` only (SSL tasks feed two views).
"""

from __future__ import annotations

import contextlib
import random
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from tvlars import distributed


@contextlib.contextmanager
def untouched(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Leave training as if the block never ran: the model's buffers (BatchNorm running statistics and
    ``num_batches_tracked``) and every random state (Python, NumPy, torch on the CPU and ``device``) are
    restored on exit. Gradients must be taken with ``torch.autograd.grad``, which leaves ``.grad`` alone."""
    buffers = [b.detach().clone() for b in model.buffers()]
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), buffers, strict=True):
                buffer.copy_(saved)


@contextlib.contextmanager
def per_process_batchnorm(model: nn.Module) -> Iterator[None]:
    """Within the block every SyncBatchNorm layer of ``model`` normalises with this process's own batch statistics,
    as BatchNorm does (its forward is BatchNorm's, set as an instance attribute and removed on exit)."""
    layers = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    for layer in layers:
        layer.forward = types.MethodType(_BatchNorm.forward, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def tracked_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics (SyncBatchNorm included)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


class _Population:
    """Per-channel count, mean and sum of squared deviations of one layer's inputs, combined batch by batch."""

    def __init__(self) -> None:
        self.count = 0.0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, count: float, mean: Tensor, m2: Tensor) -> None:
        mean, m2 = mean.double(), m2.double()
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * count / total)
        self.count = total


def _recording_forward(layer: _BatchNorm, population: _Population, world_size: int) -> Callable[[Tensor], Tensor]:
    """A train-mode BatchNorm forward that normalises with the (global) batch statistics and records them."""

    def forward(x: Tensor) -> Tensor:
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1, *([1] * (x.ndim - 2))]
        xf = x.float()
        count = xf.numel() // xf.shape[1] * world_size  # every process holds a batch of the same size
        mean = distributed.all_reduce_sum(xf.sum(dims)) / count
        centred = xf - mean.view(shape)
        m2 = distributed.all_reduce_sum(centred.square().sum(dims))
        population.add(float(count), mean, m2)
        y = centred * torch.rsqrt(m2 / count + layer.eps).view(shape)
        if layer.weight is not None:
            y = y * layer.weight.view(shape) + layer.bias.view(shape)
        return y.to(x.dtype)

    return forward


@contextlib.contextmanager
def recalibrated(model: nn.Module, batches: Callable[[], Iterable[Any]], forward: Callable[[Any], Any],
                 device: torch.device, world_size: int = 1, seed: int = 0) -> Iterator[int]:
    """Within the block, ``model``'s BatchNorm layers hold the population statistics of their inputs over the
    batches of ``batches()`` (each fed through ``forward(batch)`` in train mode, no gradients; ``batches`` is
    called after torch's random state is set to ``seed``, so their random augmentations are the same at every
    call); on exit the previous statistics, the mode of every module and every random state come back. Yields the
    number of layers recalibrated (0: the model has no BatchNorm with running statistics, nothing is run)."""
    layers = tracked_batchnorms(model)
    if not layers:
        yield 0
        return
    modes = [(m, m.training) for m in model.modules()]
    with untouched(model, device):
        populations = [_Population() for _ in layers]
        for layer, population in zip(layers, populations, strict=True):
            layer.forward = _recording_forward(layer, population, world_size)  # an instance attribute: removed below
        try:
            model.train()
            torch.manual_seed(seed)
            with torch.no_grad():
                for batch in batches():
                    forward(batch)
        finally:
            for layer in layers:
                del layer.forward
            for module, training in modes:
                module.training = training
        with torch.no_grad():
            for layer, population in zip(layers, populations, strict=True):
                if population.mean is None or population.m2 is None:
                    continue  # a layer this task's forward does not reach
                layer.running_mean.copy_(population.mean)
                layer.running_var.copy_(population.m2 / max(population.count - 1.0, 1.0))
        yield len(layers)
