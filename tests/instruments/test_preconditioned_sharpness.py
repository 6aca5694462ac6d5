"""Preconditioned sharpness: each optimizer's diagonal preconditioner P and threshold against hand-computed values,
the thresholds against where preconditioned momentum diverges, λ_max(P^½ H P^½) on a quadratic with known H and P
and against an explicit Hessian of a tiny network, no host synchronisation, the config key and the run's records."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fakes import fake_engine
from omegaconf import OmegaConf
from torch import Tensor, nn

from tests.helpers import compose_config
from tests.nosync import NoHostSync
from tvlars.config import run_id, validate
from tvlars.errors import UserError
from tvlars.instruments.sharpness import Sharpness
from tvlars.optim import CDAT, LAMB, LARS, TVLARS, param_groups
from tvlars.optim.stability import momentum_threshold, preconditioner
from tvlars.records import read_jsonl
from tvlars.run import run

DTYPE = torch.float64


class Quadratic(nn.Module):
    """``f(w) = ½ wᵀHw + bᵀw`` over a 2×3 weight and a 3-vector bias (9 coordinates), whatever the batch."""

    def __init__(self, hessian: Tensor) -> None:
        super().__init__()
        self.hessian, self.linear = hessian, torch.linspace(-1.0, 1.0, 9, dtype=DTYPE)
        generator = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(2, 3, dtype=DTYPE, generator=generator))
        self.bias = nn.Parameter(torch.randn(3, dtype=DTYPE, generator=generator))

    def flat(self) -> Tensor:
        return torch.cat([self.weight.reshape(-1), self.bias])


class QuadraticTask:
    def training_step(self, model: Quadratic, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        w = model.flat()
        return 0.5 * w @ model.hessian @ w + model.linear @ w, {}


def _hessian(seed: int = 0) -> Tensor:
    q = torch.linalg.qr(torch.randn(9, 9, dtype=DTYPE, generator=torch.Generator().manual_seed(seed)))[0]
    return q @ torch.diag(torch.tensor([9.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.2], dtype=DTYPE)) @ q.T


def _stepped(model: Quadratic, optimizer: torch.optim.Optimizer) -> Tensor:
    """One step on the quadratic; returns the gradient it took (flat)."""
    loss, _ = QuadraticTask().training_step(model, None)
    loss.backward()
    gradient = torch.cat([model.weight.grad.reshape(-1), model.bias.grad])
    optimizer.step()
    return gradient


def _flat(diagonal: list[Tensor], model: Quadratic) -> Tensor:
    """P per parameter (0-d or full) as the 9 diagonal entries."""
    return torch.cat([d.to(DTYPE).expand_as(p).reshape(-1) for d, p in zip(diagonal, model.parameters(), strict=True)])


def _dominant(matrix: Tensor) -> float:
    """The eigenvalue of largest magnitude of a symmetric matrix, with its sign (what power iteration finds)."""
    values = torch.linalg.eigvalsh(matrix)
    return float(values[values.abs().argmax()])


# ------------------------------------------------------------------------------------------ P and thresholds
def test_lars_and_tvlars_precondition_each_tensor_by_its_trust_ratio() -> None:
    """After one step from rest: r = η ‖w‖ / ‖g‖ on the adapting weight (× φ(1) for TVLARS), 1 on the bias."""
    for make, factor in ((lambda groups: LARS(groups, lr=2.0, momentum=0.9), 1.0),
                         (lambda groups: TVLARS(groups, lr=2.0, momentum=0.9, lam=0.5, delay_steps=3),
                          1.0 / (1.0 + math.exp(0.5 * (1 - 3))) + 0.001)):
        model = Quadratic(_hessian())
        optimizer = make(param_groups(model, 0.0))
        assert optimizer.preconditioner() is None  # nothing to report before the first step
        weight = model.weight.detach().clone()
        gradient = _stepped(model, optimizer)
        found = optimizer.preconditioner()
        expected = 1e-3 * weight.norm() / gradient[:6].norm() * factor
        assert found.lr == 2.0 and found.threshold == pytest.approx(3.8 / 2.0)
        assert [d.shape for d in found.diagonal] == [torch.Size([]), torch.Size([])]
        assert found.diagonal[0].item() == pytest.approx(expected.item(), rel=1e-6)
        assert found.diagonal[1].item() == 1.0


def test_lamb_preconditions_each_coordinate_by_its_trust_ratio_times_adams_step() -> None:
    """After one step from zero moments: m̂ = g, v̂ = g², so u = g/(|g| + ε) and P = τ / ((1 − β1)(|g| + ε)) with
    bias correction (c1 = 1 − β1; √(v/c2) = |g|), τ / (|g|·√(1 − β2) + ε) without."""
    eps = 1e-6
    for bias_correction in (True, False):
        model = Quadratic(_hessian())
        optimizer = LAMB(param_groups(model, 0.0), lr=0.01, betas=(0.9, 0.999), eps=eps,
                         bias_correction=bias_correction)
        weight = model.weight.detach().clone()
        g = _stepped(model, optimizer)
        found = optimizer.preconditioner()
        if bias_correction:
            adam = 1.0 / (0.1 * (g.abs() + eps))
            update = g / (g.abs() + eps)
        else:
            adam = 1.0 / (g.abs() * math.sqrt(1e-3) + eps)
            update = 0.1 * g * adam
        tau = weight.norm() / update[:6].norm()
        expected = torch.cat([tau * adam[:6], adam[6:]])  # the bias does not adapt: τ = 1
        assert torch.allclose(_flat(found.diagonal, model), expected, rtol=1e-5)
        assert found.threshold == pytest.approx(3.8 / (0.1 * 0.01))


def test_adamw_sgd_group_lrs_and_optimizers_without_a_preconditioner() -> None:
    model = Quadratic(_hessian())
    adamw = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-8)
    g = _stepped(model, adamw)
    found = preconditioner(adamw)
    assert torch.allclose(_flat(found.diagonal, model), 1.0 / (0.2 * (g.abs() + 1e-8)), rtol=1e-6)
    assert found.threshold == pytest.approx(3.6 / (0.2 * 0.01))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert preconditioner(sgd).diagonal is None and preconditioner(sgd).threshold == pytest.approx(3.8 / 0.1)
    halved = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.05}], lr=0.1)
    assert [d.item() for d in preconditioner(halved).diagonal] == [1.0, 0.5]  # relative to the first group's LR
    assert preconditioner(CDAT(model.parameters(), lr=1.0)) is None
    assert preconditioner(torch.optim.SGD(model.parameters(), lr=0.0)).threshold is None


@pytest.mark.parametrize(("momentum", "dampening", "nesterov"), [
    (0.0, 0.0, False), (0.9, 0.0, False), (0.9, 0.0, True), (0.9, 0.9, False), (0.5, 0.2, False)])
def test_threshold_is_where_preconditioned_momentum_diverges(momentum: float, dampening: float,
                                                             nesterov: bool) -> None:
    """``b ← β b + (1 − d) P H w`` (LARS's momentum on r·u: d = 0; Adam's EMA: d = β), ``w ← w − η b`` (Nesterov:
    ``w ← w − η (P H w + β b)``) is stable iff ``λ_max(P^½ H P^½)`` is below the threshold at η, whatever P."""
    hessian = _hessian(1)[:4, :4] @ _hessian(1)[:4, :4].T
    p = torch.tensor([0.3, 2.0, 0.7, 1.1], dtype=DTYPE)
    top = _dominant(p.sqrt()[:, None] * hessian * p.sqrt()[None, :])

    def diverges(lr: float) -> bool:
        w, b = torch.ones(4, dtype=DTYPE), torch.zeros(4, dtype=DTYPE)
        for _ in range(4000):
            g = p * (hessian @ w)
            b = momentum * b + (1 - dampening) * g
            w = w - lr * ((g + momentum * b) if nesterov else b)
        return bool(w.norm() > 1.0)

    lr = 1.0
    edge = momentum_threshold(lr, momentum, dampening, nesterov) / top  # the LR at which top meets the threshold
    assert not diverges(0.99 * edge) and diverges(1.01 * edge)


# ------------------------------------------------------------------------------------------ the measurement
def test_preconditioned_sharpness_of_a_quadratic_with_known_hessian_and_preconditioner() -> None:
    hessian = _hessian()
    model = Quadratic(hessian)
    engine = fake_engine(model, QuadraticTask(), batches=[None])
    p = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 3.0, 0.1, 2.0], dtype=DTYPE)
    diagonal = [torch.tensor(0.5, dtype=DTYPE), p[6:]]  # per tensor for the weight, per coordinate for the bias
    instrument = Sharpness(every=1, iters=200)
    value, scaled = instrument.measure(engine, diagonal)
    assert value.item() == pytest.approx(9.0, rel=1e-6)
    assert scaled.item() == pytest.approx(_dominant(p.sqrt()[:, None] * hessian * p.sqrt()[None, :]), rel=1e-6)
    raw_only, none = Sharpness(every=1, iters=200).measure(engine)
    assert none is None and raw_only.item() == value.item()  # the raw iteration does not depend on the option


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(DTYPE)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CrossEntropy:
    def training_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        return nn.functional.cross_entropy(model(x), y), {}


@pytest.mark.parametrize("make", [lambda groups: LARS(groups, lr=3.0, weight_decay=5e-4),
                                  lambda groups: LAMB(groups, lr=0.01, weight_decay=5e-4)], ids=["lars", "lamb"])
def test_preconditioned_sharpness_matches_an_explicit_hessian_of_a_tiny_network(make: Any) -> None:
    """λ of largest magnitude of P^½ H P^½ with H the dense Hessian of the loss (torch.autograd.functional) and P
    the optimizer's own after 3 steps, against the instrument's power iteration."""
    torch.manual_seed(0)
    model = TinyNet()
    batch = (torch.randn(32, 4, dtype=DTYPE), torch.randint(0, 3, (32,)))
    engine = fake_engine(model, CrossEntropy(), batches=[batch])
    engine.optimizer = make(param_groups(model, 5e-4))
    for _ in range(3):
        engine.optimizer.zero_grad()
        CrossEntropy().training_step(model, batch)[0].backward()
        engine.optimizer.step()
    params = [p for g in engine.optimizer.param_groups for p in g["params"]]
    shapes = [p.shape for p in params]

    def loss(flat: Tensor) -> Tensor:
        pieces = torch.split(flat, [math.prod(s) for s in shapes])
        values = {name: piece.view(shape) for (name, _), piece, shape in
                  zip(((n, p) for g in engine.optimizer.param_groups for n, p in zip(g["names"], g["params"],
                                                                                     strict=True)),
                      pieces, shapes, strict=True)}
        logits = torch.func.functional_call(model.net, {k.removeprefix("net."): v for k, v in values.items()},
                                            (batch[0],))
        return nn.functional.cross_entropy(logits, batch[1])

    hessian = torch.autograd.functional.hessian(loss, torch.cat([p.detach().reshape(-1) for p in params]))
    found = engine.optimizer.preconditioner()
    p = torch.cat([d.to(DTYPE).expand(s).reshape(-1) for d, s in zip(found.diagonal, shapes, strict=True)])
    value, scaled = Sharpness(every=1, iters=500).measure(engine, found.diagonal)
    assert value.item() == pytest.approx(_dominant(hessian), rel=1e-5)
    assert scaled.item() == pytest.approx(_dominant(p.sqrt()[:, None] * hessian * p.sqrt()[None, :]), rel=1e-5)


@pytest.mark.parametrize("make", [lambda params: LARS(params, lr=3.0), lambda params: LAMB(params, lr=0.01),
                                  lambda params: torch.optim.AdamW(params, lr=0.01)], ids=["lars", "lamb", "adamw"])
def test_the_preconditioned_measurement_does_not_synchronise(make: Any) -> None:
    """Only the row's one read (Sharpness.record) synchronises: P and both power iterations stay on the device."""
    model = Quadratic(_hessian())
    engine = fake_engine(model, QuadraticTask(), batches=[None])
    engine.optimizer = make(param_groups(model, 0.0))
    _stepped(model, engine.optimizer)
    instrument = Sharpness(every=1, iters=3)
    instrument.measure(engine, preconditioner(engine.optimizer).diagonal)  # draws the fixed batch and the starts
    steps = [s["step"] for s in engine.optimizer.state.values() if "step" in s]  # torch's AdamW: on the host
    with NoHostSync(factories=False, host_resident=steps):
        found = preconditioner(engine.optimizer)
        value, scaled = instrument.measure(engine, found.diagonal)
    assert math.isfinite(value.item()) and math.isfinite(scaled.item())


# ------------------------------------------------------------------------------------------ config and runs
def test_the_key_needs_the_sharpness_and_is_left_out_of_the_run_id_when_off() -> None:
    with pytest.raises(UserError, match="sharpness_preconditioned=true measures with the sharpness, which is off"):
        validate(compose_config(["sharpness_preconditioned=true"]))
    cfg = compose_config(["log_sharpness_every=10"])
    older = OmegaConf.create(OmegaConf.to_container(cfg))
    del older["sharpness_preconditioned"]  # a config from before the key
    assert run_id(cfg) == run_id(older) != run_id(compose_config(["log_sharpness_every=10",
                                                                    "sharpness_preconditioned=true"]))


def test_a_lars_run_records_both_values_and_trains_as_without_them(tiny_cfg, tmp_path: Path) -> None:
    common = ("optimizer=lars", "optimizer.lr=2", "epochs=2", "log_sharpness_every=3", "sharpness_iters=4")
    run(tiny_cfg(*common, f"run_dir={tmp_path / 'raw'}"))
    run(tiny_cfg(*common, "sharpness_preconditioned=true", f"run_dir={tmp_path / 'both'}"))
    raw, both = (read_jsonl(tmp_path / name / "sharpness.jsonl") for name in ("raw", "both"))
    assert [r["lambda_max"] for r in both] == [r["lambda_max"] for r in raw]  # the raw values do not move
    assert [r["step"] for r in both] == [3, 6]
    for row in both:
        assert row["stability_threshold"] is None and row["lr"] == 2.0
        assert row["preconditioned_threshold"] == pytest.approx(3.8 / 2.0)
        assert math.isfinite(row["lambda_max_preconditioned"]) and row["lambda_max_preconditioned"] != 0
    strip = lambda name: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k}  # noqa: E731
                          for r in read_jsonl(tmp_path / name / "metrics.jsonl")]
    assert strip("both") == strip("raw")  # training is untouched by computing P


def test_the_matched_sharpness_study_gives_every_row_the_same_peak_lr() -> None:
    from tvlars.spec import load_spec

    spec = load_spec("fmnist-sharpness-matched")
    assert {p["optimizer.lr"] for row in spec.rows for p in row.points(4096)} == {8}
    assert not any(o.startswith("lr_scaling") for o in (*spec.base, *(o for r in spec.rows for o in r.overrides)))
    assert "sharpness_preconditioned=true" in spec.base and len(spec.jobs()) == 9
