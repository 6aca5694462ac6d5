r"""The gradient noise scale ``B_simple = tr(Σ) / |G|²`` (McCandlish et al. 2018, "An Empirical Model of
Large-Batch Training", §2.2 and appendix A): the batch size around which larger batches stop buying fewer steps.

``G`` is the true gradient and ``Σ`` the per-example gradient covariance. A batch-``B`` gradient has
``E|G_B|² = |G|² + tr(Σ)/B``, so squared gradient norms at two batch sizes ``B_small < B_big`` give unbiased
estimates of both (appendix A)::

    |G|²  ≈ (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)
    tr Σ  ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)

Chunks: on one process the local batch is cut into two halves (``B_small = B/2``, ``B_big = B``); under DDP each
process's local batch is one chunk (``B_small = B/W``, ``B_big = B``). ``|G_small|²`` is the mean over chunks
(and processes) of each chunk's squared gradient norm, ``|G_big|²`` the squared norm of their mean. A chunk's
gradient is that of the chunk alone, under DDP as on one process: SyncBatchNorm normalises with the process's own
statistics (:func:`~tvlars.evaluation.per_process_batchnorm`) and a loss over the global batch (SSL) sees the
process's batch only (:func:`~tvlars.distributed.per_process`), so 1 and W processes estimate alike.
Each estimate is smoothed by an EMA over measurements (``β = 0.9``, bias-corrected);
``b_simple = EMA(tr Σ) / EMA(|G|²)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tvlars import distributed
from tvlars.evaluation import per_process_batchnorm
from tvlars.instruments.base import (
    all_reduce_mean,
    batch_size,
    measurement,
    optimized_params,
    publish,
    split_batch,
    squared_norm,
)

if TYPE_CHECKING:
    from tvlars.engine import Engine

EMA_BETA = 0.9


def unbiased_estimates(small_sq: Tensor, big_sq: Tensor, b_small: int, b_big: int) -> tuple[Tensor, Tensor]:
    """``(|G|², tr Σ)`` from the squared gradient norms ``|G_small|²``, ``|G_big|²`` at batch sizes
    ``b_small < b_big`` (McCandlish et al. 2018, appendix A)."""
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big (got {b_small}, {b_big})")
    g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace_sigma = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g2, trace_sigma


class NoiseScale:
    """Measures ``B_simple`` every ``every`` steps on the batch the optimizer is about to use.

    Cost: one forward and backward pass over the local batch (in two halves on one process), on the bare module
    in fp32, with ``torch.autograd.grad`` (``.grad`` untouched), plus under DDP one all-reduce of a
    gradient-sized vector. The EMA stays on the device and is saved in checkpoints.
    """

    def __init__(self, every: int, beta: float = EMA_BETA) -> None:
        self.every, self.beta = every, beta
        self._ema: Tensor | None = None  # EMA of (|G|², tr Σ), float64 on the device
        self._count = 0  # measurements so far (bias correction)

    def estimate(self, engine: Engine, batch: Any) -> tuple[Tensor, Tensor]:
        """One unsmoothed ``(|G|², tr Σ)`` of the training loss at the current parameters on ``batch``."""
        world = engine.dist.world_size
        chunks = split_batch(batch, 2) if world == 1 else [batch]
        params = optimized_params(engine.optimizer)
        small_sq, total = None, None
        with torch.enable_grad(), distributed.per_process(), per_process_batchnorm(engine.model):
            for chunk in chunks:
                loss, _ = engine.task.training_step(engine.model, chunk)
                grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
                small_sq = squared_norm(grads) if small_sq is None else small_sq + squared_norm(grads)
                total = list(grads) if total is None else torch._foreach_add(total, grads)
        assert small_sq is not None and total is not None
        small_sq = distributed.all_reduce_sum(small_sq / len(chunks)) / world
        big_sq = squared_norm(all_reduce_mean(torch._foreach_div(total, len(chunks)), world))
        b_small = batch_size(chunks[0])
        return unbiased_estimates(small_sq, big_sq, b_small, b_small * len(chunks) * world)

    def measure(self, engine: Engine, batch: Any) -> dict[str, Tensor]:
        """Update the EMAs with one estimate; the smoothed ``b_simple``, ``g2``, ``trace_sigma`` (device tensors)."""
        estimates = torch.stack(self.estimate(engine, batch))
        if self._ema is None:
            self._ema = torch.zeros_like(estimates)
        self._ema.lerp_(estimates, 1.0 - self.beta)
        self._count += 1
        g2, trace_sigma = self._ema / (1.0 - self.beta**self._count)
        return {"b_simple": trace_sigma / g2, "g2": g2, "trace_sigma": trace_sigma}

    def record(self, engine: Engine, step: int, batch: Any) -> None:
        """Measure on optimizer step ``step``'s batch before its update, append the row to ``noise_scale.jsonl``
        and log it (one host sync)."""
        values = self.measure(engine, batch)
        numbers = dict(zip(values, torch.stack(list(values.values())).tolist(), strict=True))
        publish(engine, "noise_scale", "noise_scale", measurement(engine, step, numbers))

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self._ema, "count": self._count}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self._ema = None if state["ema"] is None else state["ema"].to(device, copy=True)
        self._count = state["count"]
