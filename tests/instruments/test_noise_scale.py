"""The gradient noise scale: McCandlish et al.'s unbiased estimators against the closed form of linear least squares
with Gaussian data, the DDP split against the one-process split (with SyncBatchNorm and a loss over the gathered
global batch too), the EMA and its checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fakes import LeastSquares, fake_engine
from torch import nn

from tvlars.distributed import gather
from tvlars.instruments.base import split_batch
from tvlars.instruments.noise_scale import NoiseScale, unbiased_estimates

DTYPE = torch.float64
DIM, SIGMA, BATCH = 8, 1.0, 32


def _model(delta: torch.Tensor) -> nn.Linear:
    """``w = w* + δ`` with ``w* = 0``: a linear model without bias, in float64."""
    model = nn.Linear(DIM, 1, bias=False).to(DTYPE)
    with torch.no_grad():
        model.weight.copy_(delta[None])
    return model


def _draw(generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x ~ N(0, I)``, ``y = x·w* + ε = ε`` with ``ε ~ N(0, σ²)``."""
    return torch.randn(n, DIM, generator=generator, dtype=DTYPE), SIGMA * torch.randn(n, generator=generator,
                                                                                        dtype=DTYPE)


def test_split_batch_cuts_every_tensor_of_a_nested_batch() -> None:
    v1, v2, y = torch.arange(8.0), torch.arange(8.0) + 10, torch.arange(8)
    first, second = split_batch(((v1, v2), y), 2)
    assert torch.equal(first[0][0], v1[:4]) and torch.equal(second[0][1], v2[4:]) and torch.equal(second[1], y[4:])
    assert isinstance(first, tuple) and isinstance(first[0], tuple)


def test_estimators_are_unbiased_on_least_squares_with_gaussian_data() -> None:
    """Per-example gradient ``x(xᵀδ − ε)``: ``G = δ`` and ``Σ = (|δ|² + σ²)I + δδᵀ`` (Isserlis), so
    ``|G|² = |δ|²`` and ``tr Σ = d(|δ|² + σ²) + |δ|²``. The mean of many estimates must match within 4 standard
    errors, which are small enough to reject the naive ``|G_big|²`` for ``|G|²`` (biased by ``tr Σ / B``)."""
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(DIM, generator=generator, dtype=DTYPE)
    delta /= delta.norm()
    engine = fake_engine(_model(delta), LeastSquares())
    instrument = NoiseScale(every=1)
    draws = torch.tensor([[v.item() for v in instrument.estimate(engine, _draw(generator, BATCH))]
                          for _ in range(3000)], dtype=DTYPE)
    mean, stderr = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    g2, trace_sigma = 1.0, DIM * (1.0 + SIGMA**2) + 1.0
    assert abs(mean[0] - g2) < 4 * stderr[0] and stderr[0] < 0.05 * g2
    assert abs(mean[1] - trace_sigma) < 4 * stderr[1] and stderr[1] < 0.02 * trace_sigma
    assert trace_sigma / BATCH > 8 * stderr[0]  # the bias of the naive estimate would be detected


def test_unbiased_estimates_invert_the_two_batch_sizes() -> None:
    """``E|G_B|² = |G|² + tr Σ / B`` at both sizes returns ``|G|²`` and ``tr Σ`` exactly."""
    g2, trace = torch.tensor(2.0, dtype=DTYPE), torch.tensor(50.0, dtype=DTYPE)
    estimates = unbiased_estimates(g2 + trace / 16, g2 + trace / 64, 16, 64)
    torch.testing.assert_close(torch.stack(estimates), torch.stack([g2, trace]))
    with pytest.raises(ValueError):
        unbiased_estimates(g2, g2, 64, 64)


def test_measurements_are_smoothed_by_a_bias_corrected_ema_and_resume_exactly() -> None:
    generator = torch.Generator().manual_seed(1)
    engine = fake_engine(_model(torch.ones(DIM, dtype=DTYPE)), LeastSquares())
    batches = [_draw(generator, BATCH) for _ in range(4)]
    reference = NoiseScale(every=1)
    raw = [torch.stack(reference.estimate(engine, b)) for b in batches[:2]]
    instrument = NoiseScale(every=1, beta=0.5)
    first = instrument.measure(engine, batches[0])
    torch.testing.assert_close(torch.stack([first["g2"], first["trace_sigma"]]), raw[0])  # bias-corrected
    second = instrument.measure(engine, batches[1])
    smoothed = (0.5 * 0.5 * raw[0] + 0.5 * raw[1]) / (1 - 0.5**2)
    torch.testing.assert_close(torch.stack([second["g2"], second["trace_sigma"]]), smoothed)
    torch.testing.assert_close(second["b_simple"], smoothed[1] / smoothed[0])
    resumed = NoiseScale(every=1, beta=0.5)
    resumed.load_state_dict(instrument.state_dict(), torch.device("cpu"))
    for batch in batches[2:]:
        assert instrument.measure(engine, batch) == resumed.measure(engine, batch)


def _ddp_worker(rank: int, store: str, batch: tuple[torch.Tensor, torch.Tensor], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        engine = fake_engine(_model(torch.ones(DIM, dtype=DTYPE)), LeastSquares(), world_size=2, rank=rank)
        local = tuple(t[rank * BATCH // 2:(rank + 1) * BATCH // 2] for t in batch)
        estimates = torch.stack(NoiseScale(every=1).estimate(engine, local))
        torch.save(estimates, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_estimate_what_one_process_does_with_their_batches_as_halves(tmp_path: Path) -> None:
    """Under DDP each process's local batch is one chunk (``B_small = B/2`` with 2 processes), against the
    all-reduced mean: the same numbers as one process cutting the global batch into the two local batches."""
    batch = _draw(torch.Generator().manual_seed(2), BATCH)
    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), batch, str(tmp_path / "out")), nprocs=2)
    ranks = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    single = torch.stack(NoiseScale(every=1).estimate(fake_engine(_model(torch.ones(DIM, dtype=DTYPE)),
                                                                  LeastSquares()), batch))
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0], single, rtol=1e-12, atol=1e-12)


class GatheredLoss:
    """A loss over the global batch, as the SSL losses are: it couples the samples, and under DDP it gathers the
    embeddings of every process (:func:`tvlars.distributed.gather`)."""

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        z = gather(model(batch[0]))
        return (z.T @ z / len(z)).square().sum(), {}


def _bn_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(DIM, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 4)).to(DTYPE)


def _coupled_worker(rank: int, store: str, batch: tuple[torch.Tensor, torch.Tensor], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(_bn_model())  # as wrap_for_training does on CUDA
        assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        engine = fake_engine(model, GatheredLoss(), world_size=2, rank=rank)
        local = tuple(t[rank * BATCH // 2:(rank + 1) * BATCH // 2] for t in batch)
        torch.save(torch.stack(NoiseScale(every=1).estimate(engine, local)), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_with_syncbatchnorm_and_a_gathered_loss_estimate_what_one_process_does(tmp_path: Path) -> None:
    """Each process's gradient is that of its own batch alone (its own BatchNorm statistics, its own loss), as each
    half's is on one process: with global statistics or the gathered loss the small-batch gradients would be
    another quantity."""
    batch = _draw(torch.Generator().manual_seed(4), BATCH)
    mp.spawn(_coupled_worker, args=(str(tmp_path / "store"), batch, str(tmp_path / "out")), nprocs=2)
    ranks = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    single = torch.stack(NoiseScale(every=1).estimate(fake_engine(_bn_model(), GatheredLoss()), batch))
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0], single, rtol=1e-10, atol=1e-12)
