"""Sharpness: the instrument on losses with a known Hessian spectrum, the stability thresholds against torch's SGD,
and the fixed batch drawn again equal to the run's first batch."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fakes import LeastSquares, fake_engine
from torch import Tensor, nn

from tests.helpers import compose_config, tiny
from tvlars import distributed
from tvlars.build import build
from tvlars.engine import TrainState, seed_all
from tvlars.errors import UserError
from tvlars.evaluation import untouched
from tvlars.instruments import Instruments
from tvlars.instruments.sharpness import DEFAULT_ITERS, Sharpness, first_training_batch, stability_threshold
from tvlars.optim import LARS

DTYPE = torch.float64


def _orthogonal(n: int, seed: int) -> Tensor:
    return torch.linalg.qr(torch.randn(n, n, dtype=DTYPE, generator=torch.Generator().manual_seed(seed)))[0]


def test_lambda_max_of_least_squares_on_the_fixed_batch_within_1e3_after_the_default_iterations() -> None:
    """``½ mean (Xw − y)²`` has Hessian ``XᵀX/n``: with ``X = √n U diag(s) Vᵀ`` its spectrum is ``s²``."""
    n, spectrum = 64, torch.tensor([10.0, 7.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.1], dtype=DTYPE)
    x = n**0.5 * _orthogonal(n, 0)[:, :8] @ torch.diag(spectrum.sqrt()) @ _orthogonal(8, 1).T
    batch = (x, torch.randn(n, dtype=DTYPE, generator=torch.Generator().manual_seed(2)))
    model = nn.Linear(8, 1, bias=False).to(DTYPE)
    other = (torch.randn(n, 8, dtype=DTYPE), torch.zeros(n, dtype=DTYPE))
    engine = fake_engine(model, LeastSquares(), batches=[batch, other])
    instrument = Sharpness(every=1)
    assert instrument.iters == DEFAULT_ITERS == 20
    value, scaled = instrument.measure(engine)
    assert value.item() == pytest.approx(10.0, rel=1e-3) and scaled is None
    engine.train_loader.reverse()  # later batches never replace the fixed one
    assert instrument.measure(engine)[0].item() == pytest.approx(10.0, rel=1e-6)  # warm-started: converged further


class Quadratic(nn.Module):
    """``f(w) = ½ wᵀHw`` over two parameter tensors, whatever the batch."""

    def __init__(self, hessian: Tensor) -> None:
        super().__init__()
        self.hessian = hessian
        self.weight = nn.Parameter(torch.randn(2, 3, dtype=DTYPE))
        self.bias = nn.Parameter(torch.randn(3, dtype=DTYPE))


class QuadraticTask:
    def training_step(self, model: Quadratic, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        w = torch.cat([model.weight.reshape(-1), model.bias])
        return 0.5 * w @ model.hessian @ w, {}


@pytest.mark.parametrize(("spectrum", "reported"), [
    ([20.0, 13.0, 8.0, 4.0, 2.0, 1.0, 0.0, -1.0, -5.0], 20.0),
    ([-30.0, 20.0, 13.0, 8.0, 4.0, 2.0, 1.0, 0.0, -1.0], -30.0),  # negative-dominant: the largest |λ|, signed
])
def test_the_eigenvalue_of_largest_magnitude_is_reported_with_its_sign(spectrum: list[float],
                                                                       reported: float) -> None:
    q = _orthogonal(9, 3)
    model = Quadratic(q @ torch.diag(torch.tensor(spectrum, dtype=DTYPE)) @ q.T)
    engine = fake_engine(model, QuadraticTask(), batches=[None])
    assert Sharpness(every=1).measure(engine)[0].item() == pytest.approx(reported, rel=1e-3)


def test_state_round_trip_gives_the_same_measurements() -> None:
    q = _orthogonal(9, 4)
    model = Quadratic(q @ torch.diag(torch.linspace(1.0, 9.0, 9, dtype=DTYPE)) @ q.T)
    engine = fake_engine(model, QuadraticTask(), batches=[None])
    first, resumed = Sharpness(every=1, iters=3), Sharpness(every=1, iters=3)
    first.measure(engine)
    resumed.load_state_dict(first.state_dict(), torch.device("cpu"))
    assert first.measure(engine)[0].item() == resumed.measure(engine)[0].item()


def _diverges(optimizer_kwargs: dict[str, Any], curvature: float, steps: int = 3000) -> bool:
    w = nn.Parameter(torch.ones(1, dtype=DTYPE))
    optimizer = torch.optim.SGD([w], **optimizer_kwargs)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * curvature * w.square().sum()).backward()
        optimizer.step()
    return bool(w.abs().item() > 1.0)


@pytest.mark.parametrize("kwargs", [
    {"lr": 0.1}, {"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "momentum": 0.5, "dampening": 0.5},
])
def test_stability_threshold_is_where_sgd_starts_to_diverge_on_a_quadratic(kwargs: dict[str, Any]) -> None:
    threshold = stability_threshold(torch.optim.SGD([nn.Parameter(torch.ones(1))], **kwargs))
    assert threshold is not None
    assert not _diverges(kwargs, 0.99 * threshold)
    assert _diverges(kwargs, 1.01 * threshold)


def test_stability_threshold_does_not_apply_to_adaptive_or_layer_wise_optimizers() -> None:
    params = [nn.Parameter(torch.ones(2, 2))]
    assert stability_threshold(torch.optim.AdamW(params)) is None
    assert stability_threshold(LARS(params, lr=0.1)) is None


@pytest.mark.parametrize("on_device", ["true", "false"])
def test_the_fixed_batch_drawn_again_is_the_runs_first_batch(on_device: str) -> None:
    cfg = compose_config(tiny("dataset.augment.crop_padding=2", "dataset.augment.hflip=true", "num_workers=0",
                              f"data.on_device={on_device}"))
    engine = build(cfg, distributed.init("cpu")).engine
    seen: list[Any] = []
    engine._train_step = lambda batch: (seen.append(batch), (torch.zeros(()), {"count": torch.ones(())}))[1]
    for epoch in range(2):  # as Engine.fit seeds its epochs
        seed_all(cfg.seed, 0, epoch + 1)
        engine.train_epoch(TrainState(), epoch)
        with untouched(engine.model, engine.device):
            again = first_training_batch(engine)
        assert torch.equal(again[0], seen[0][0]) and torch.equal(again[1], seen[0][1])
    assert not torch.equal(seen[0][0], seen[4][0])  # epoch 2 began with another batch


def test_sharpness_is_refused_with_syncbatchnorm_across_processes(tiny_cfg) -> None:
    """SyncBatchNorm's backward has no double backward: with several processes the run must stop before training,
    with one line. With one (a one-process torchrun) SyncBatchNorm runs plain batch norm, which has one."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    with pytest.raises(UserError, match="log_sharpness_every needs double backward"):
        Instruments.from_config(tiny_cfg("log_sharpness_every=10"), model, world_size=2)
    assert Instruments.from_config(tiny_cfg("log_noise_scale_every=10"), model, world_size=2).noise_scale is not None
    assert Instruments.from_config(tiny_cfg("log_sharpness_every=10"), model, world_size=1).sharpness is not None


def test_sharpness_batch_takes_the_first_samples_of_the_fixed_batch() -> None:
    cfg = compose_config(tiny("log_sharpness_every=1", "sharpness_batch=8", "sharpness_iters=2"))
    engine = build(cfg, distributed.init("cpu")).engine
    sharpness = Instruments.from_config(cfg, engine.model).sharpness
    assert sharpness is not None
    with untouched(engine.model, engine.device):
        value, _ = sharpness.measure(engine)
        full = first_training_batch(engine)
    assert torch.isfinite(value)
    assert torch.equal(sharpness._batch[0], full[0][:8]) and torch.equal(sharpness._batch[1], full[1][:8])
