"""Precise BN (tvlars.evaluation.recalibrated): population statistics over the recalibration batches, a planted
lag removed, training untouched, no host syncs, and the same statistics from 1 and 2 gloo processes."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from tests.nosync import NoHostSync
from tvlars.evaluation import recalibrated, tracked_batchnorms

CPU = torch.device("cpu")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _batches(count: int = 3, size: int = 16, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 3, 6, 6, generator=generator) * 3 + 2 for _ in range(count)]


def _forward(model: nn.Module):
    return lambda batch: model(batch)


def test_first_layer_gets_the_population_mean_and_unbiased_variance_of_all_batches() -> None:
    model, batches = _net(), _batches()
    conv, bn = model[0], model[1]
    with torch.no_grad():
        inputs = torch.cat([conv(b) for b in batches])  # what the first BatchNorm sees, over every batch
    expected_mean = inputs.mean(dim=(0, 2, 3))
    expected_var = inputs.var(dim=(0, 2, 3), unbiased=True)
    with recalibrated(model, lambda: batches, _forward(model), CPU) as layers:
        assert layers == 2
        torch.testing.assert_close(bn.running_mean, expected_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bn.running_var, expected_var, rtol=1e-5, atol=1e-5)


def test_layers_normalise_with_batch_statistics_as_in_training() -> None:
    """Inside the recalibration pass each batch is normalised with its own statistics, as train mode does, so the
    second layer sees what it saw in training: its statistics equal those of a plain train-mode pass."""
    model, batches = _net(), _batches()
    reference = copy.deepcopy(model).train()
    features = []
    reference[4].register_forward_hook(lambda m, args, out: features.append(args[0].detach()))
    with torch.no_grad():
        for batch in batches:
            reference(batch)
    inputs = torch.cat(features)
    with recalibrated(model, lambda: batches, _forward(model), CPU):
        torch.testing.assert_close(model[4].running_mean, inputs.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model[4].running_var, inputs.var(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def _blobs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, 4, (n,), generator=generator)
    centres = torch.tensor([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [-4.0, -4.0, -4.0]])
    images = centres[labels][:, :, None, None] + torch.randn(n, 3, 6, 6, generator=generator)
    return images, labels


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        top1 = (model(images).argmax(1) == labels).float().mean().item() * 100
    model.train()
    return top1


def test_a_planted_lag_is_removed() -> None:
    """A trained model whose running statistics are stale evaluates near chance; recalibrated, near its training
    accuracy; afterwards the stale statistics are back (training state untouched)."""
    generator = torch.Generator().manual_seed(0)
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train = [_blobs(64, generator) for _ in range(30)]
    for images, labels in train:
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    test = _blobs(512, generator)
    assert _accuracy(model, *test) > 90
    for bn in tracked_batchnorms(model):  # the lag: statistics of an input scaled 50x and shifted
        bn.running_mean.add_(20.0)
        bn.running_var.mul_(2500.0)
    stale = [b.clone() for b in model.buffers()]
    assert _accuracy(model, *test) < 40
    with recalibrated(model, lambda: [images for images, _ in train[:4]], _forward(model), CPU):
        assert _accuracy(model, *test) > 90
    for buffer, before in zip(model.buffers(), stale, strict=True):
        assert torch.equal(buffer, before)


def test_random_state_modes_and_weights_untouched() -> None:
    model = _net()
    model[4].eval()  # a module in eval mode stays so
    weights = [p.detach().clone() for p in model.parameters()]
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)

    def noisy(batch: torch.Tensor) -> None:
        model(batch + torch.rand_like(batch))  # consumes random numbers

    with recalibrated(model, _batches, noisy, CPU, seed=3):
        assert model.training and not model[4].training  # the modes come back before the caller evaluates
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    assert model.training and not model[4].training
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))


def test_the_seed_fixes_the_recalibration_draws() -> None:
    model = _net()

    def noisy(batch: torch.Tensor) -> None:
        model(batch + torch.rand_like(batch))

    stats = []
    for seed in (3, 3, 4):
        with recalibrated(model, _batches, noisy, CPU, seed=seed):
            stats.append(model[1].running_mean.clone())
    assert torch.equal(stats[0], stats[1]) and not torch.equal(stats[0], stats[2])


def test_a_model_without_batchnorm_is_left_alone() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(108, 4))
    called = []
    with recalibrated(model, lambda: called.append(1) or [], _forward(model), CPU) as layers:
        assert layers == 0
    assert not called


def test_no_host_synchronisation() -> None:
    model, batches = _net(), _batches()
    with NoHostSync():
        with recalibrated(model, lambda: batches, _forward(model), CPU):
            pass


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model, batches = _net(), _batches()
        local = [b[rank::2] for b in batches]  # this rank's half of every global batch
        with recalibrated(model, lambda: local, _forward(model), CPU, world_size=2):
            torch.save([b.clone() for b in model.buffers()], f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_give_the_statistics_of_one(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    ranks = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    model, batches = _net(), _batches()
    with recalibrated(model, lambda: batches, _forward(model), CPU):
        single = [b.clone() for b in model.buffers()]
    for a, b, one in zip(ranks[0], ranks[1], single, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, one, rtol=1e-5, atol=1e-5)
