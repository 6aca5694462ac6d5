"""CDAT on quadratics with a known Hessian (exact HVP and η), its line-minimum property, no host syncs,
state round trip, and a run of the training loop."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.nosync import NoHostSync
from tests.optim.optim_cases import ForeachListsMatch
from tvlars.optim import CDAT, LAMB, LARS
from tvlars.records import read_jsonl
from tvlars.run import run

DTYPE = torch.float64


class Quadratic:
    """``f(W, b) = ½ wᵀHw − cᵀw`` with ``w = [vec(W), b]``: a matrix (adapting group) and a vector (not)."""

    def __init__(self, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(10, 10, generator=gen, dtype=DTYPE)
        self.hessian = a @ a.T / 10 + 0.1 * torch.eye(10, dtype=DTYPE)
        self.c = torch.randn(10, generator=gen, dtype=DTYPE)
        self.weight = nn.Parameter(torch.randn(2, 3, generator=gen, dtype=DTYPE))
        self.bias = nn.Parameter(torch.randn(4, generator=gen, dtype=DTYPE))

    def flat(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([(self.weight if weight is None else weight).reshape(-1),
                          self.bias if bias is None else bias])

    def loss(self) -> torch.Tensor:
        w = self.flat()
        return 0.5 * w @ self.hessian @ w - self.c @ w

    def gradient(self) -> torch.Tensor:
        return self.hessian @ self.flat().detach() - self.c

    def groups(self, weight_decay: float = 0.0) -> list[dict]:
        return [{"params": [self.weight], "weight_decay": weight_decay, "adapt": True},
                {"params": [self.bias], "weight_decay": 0.0, "adapt": False}]

    def closure(self, optimizer: torch.optim.Optimizer):
        def closure(create_graph: bool = False) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss()
            loss.backward(create_graph=create_graph)
            return loss

        return closure


def reference_direction(q: Quadratic, base: str, states: list | None) -> tuple[torch.Tensor, list]:
    """``D`` of a plain base optimizer at lr = 1 on a copy of ``q`` (``w ← w − D``), and its new state."""
    weight, bias = nn.Parameter(q.weight.detach().clone()), nn.Parameter(q.bias.detach().clone())
    groups = [{"params": [weight], "weight_decay": 0.0, "adapt": base != "sgd"},
              {"params": [bias], "weight_decay": 0.0, "adapt": False}]
    opt = LAMB(groups, lr=1.0) if base == "lamb" else LARS(groups, lr=1.0, momentum=0.9)
    if states is not None:
        opt.load_state_dict(states)
    before = q.flat(weight, bias).detach().clone()
    grad = q.gradient()
    weight.grad, bias.grad = grad[:6].reshape(2, 3).clone(), grad[6:].clone()
    opt.step()
    return before - q.flat(weight, bias).detach(), copy.deepcopy(opt.state_dict())


@pytest.mark.parametrize("base", ["sgd", "lars", "lamb"])
def test_hvp_and_eta_are_exact_on_a_quadratic(base: str) -> None:
    q = Quadratic()
    opt = CDAT(q.groups(), lr=1e6, base=base, sigma=2.0, beta=0.9)
    ema_n = ema_d = 0.0
    states = None
    for t in range(1, 4):
        g = q.gradient()
        d, states = reference_direction(q, base, states)
        w = q.flat().detach().clone()
        opt.step(q.closure(opt))
        stats = opt.trust_stats()
        n, c = max(float(g @ d), 0.0), float(d @ q.hessian @ d)
        ema_n, ema_d = 0.9 * ema_n + 0.1 * n, 0.9 * ema_d + 0.1 * abs(c)
        eta = 2.0 * ema_n / (ema_d + 1e-12 * (1 - 0.9**t))
        torch.testing.assert_close(stats["curvature"], torch.tensor(c, dtype=DTYPE), rtol=1e-10, atol=0.0)
        torch.testing.assert_close(stats["numerator"], torch.tensor(n, dtype=DTYPE), rtol=1e-10, atol=0.0)
        torch.testing.assert_close(stats["sharpness"], torch.tensor(c / float(d @ d), dtype=DTYPE), rtol=1e-10,
                                   atol=0.0)
        torch.testing.assert_close(stats["cdat_lr"], torch.tensor(eta, dtype=DTYPE), rtol=1e-10, atol=0.0)
        torch.testing.assert_close(q.flat().detach(), w - eta * d, rtol=1e-10, atol=1e-12)
        assert stats["lr_clipped"] == 0 and stats["trust_ratio"].shape == (2,)


@pytest.mark.parametrize(("base", "weight_decay"), [("sgd", 0.0), ("lars", 0.0), ("lars", 0.1), ("lamb", 0.1)])
def test_sigma_one_steps_to_the_line_minimum(base: str, weight_decay: float) -> None:
    """σ = 1, β = 0: every step minimises ``f + ½ wd‖W‖²`` exactly along the base direction ``u``."""
    q = Quadratic(seed=1)
    opt = CDAT(q.groups(weight_decay), lr=1e6, base=base, sigma=1.0, beta=0.0, weight_decay=weight_decay)
    for _ in range(5):
        w = q.flat().detach().clone()
        opt.step(q.closure(opt))
        u = q.flat().detach() - w
        assert u.norm() > 0
        decay = torch.cat([q.weight.detach().reshape(-1) * weight_decay, torch.zeros(4, dtype=DTYPE)])
        slope = (q.gradient() + decay) @ u  # directional derivative of the regularised objective after the step
        assert abs(float(slope)) < 1e-9 * float(u.norm()) * float(q.gradient().norm() + 1)


def test_the_cap_bounds_eta() -> None:
    q = Quadratic()
    opt = CDAT(q.groups(), lr=1e-3, base="sgd", momentum=0.0)
    w, g = q.flat().detach().clone(), q.gradient()
    opt.step(q.closure(opt))
    torch.testing.assert_close(q.flat().detach(), w - 1e-3 * g)
    assert opt.trust_stats()["lr_clipped"] == 1 and opt.trust_stats()["cdat_lr"] == 1e-3


def test_a_linear_loss_has_zero_curvature_and_takes_the_capped_step() -> None:
    w = nn.Parameter(torch.ones(3, dtype=DTYPE))
    opt = CDAT([w], lr=0.5, base="sgd", momentum=0.0)

    def closure(create_graph: bool = False) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = w.sum()  # its gradient does not depend on w: no graph for the double backward
        loss.backward(create_graph=create_graph)
        return loss

    opt.step(closure)
    torch.testing.assert_close(w.detach(), torch.full((3,), 0.5, dtype=DTYPE))
    assert opt.trust_stats()["curvature"] == 0 and opt.trust_stats()["lr_clipped"] == 1


def test_an_ascent_direction_gets_no_step() -> None:
    """``n = max(−gᵀu, 0)``: with β = 0, a momentum that points uphill gives η = 0."""
    q = Quadratic()
    opt = CDAT(q.groups(), lr=1e6, base="sgd", beta=0.0)
    opt.step(q.closure(opt))
    for p, g in ((q.weight, q.gradient()[:6].reshape(2, 3)), (q.bias, q.gradient()[6:])):
        opt.base.state[p]["momentum_buffer"].copy_(-10 * g)  # D = 0.9·(−10 g) + g = −8 g
    w = q.flat().detach().clone()
    opt.step(q.closure(opt))
    assert torch.equal(q.flat().detach(), w)
    assert opt.trust_stats()["cdat_lr"] == 0 and opt.trust_stats()["numerator"] == 0


def test_step_never_reads_tensor_values_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    q = Quadratic()
    opt = CDAT(q.groups(0.01), lr=10.0, base="lamb", weight_decay=0.01)
    closure = q.closure(opt)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("host synchronisation")

    for attr in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, attr, forbidden)
    for _ in range(2):
        opt.step(closure)
        opt.trust_stats()


@pytest.mark.parametrize("base", ["sgd", "lars", "lamb"])
def test_steps_after_the_first_neither_sync_nor_make_host_tensors(base: str) -> None:
    """The closure (forward, backward with graph), the HVP, the base's direction and the tuner: no host read,
    no host-made tensor, no host/device copy once the first step has created the state."""
    q = Quadratic()
    opt = CDAT(q.groups(0.01), lr=10.0, base=base, weight_decay=0.01)
    closure = q.closure(opt)
    opt.step(closure)
    with NoHostSync():
        for _ in range(2):
            opt.step(closure)
            opt.trust_stats()


@pytest.mark.parametrize("base", ["sgd", "lars", "lamb"])
def test_cuda_like_step_gives_foreach_ops_matching_lists(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    q = Quadratic()
    opt = CDAT(q.groups(0.01), lr=10.0, base=base, weight_decay=0.01)
    monkeypatch.setattr("tvlars.optim._trust.dense_scales", lambda device: True)
    with ForeachListsMatch():
        for _ in range(2):
            opt.step(q.closure(opt))


def test_graph_is_freed_and_state_round_trips_exactly() -> None:
    q, r = Quadratic(), Quadratic()
    opt = CDAT(q.groups(), lr=10.0, base="lars")
    for _ in range(3):
        opt.step(q.closure(opt))
    assert all(p.grad is not None and not p.grad.requires_grad for p in (q.weight, q.bias))
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    with torch.no_grad():
        r.weight.copy_(q.weight)
        r.bias.copy_(q.bias)
    resumed = CDAT(r.groups(), lr=10.0, base="lars")
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert resumed.trust_stats() == {}
    for _ in range(3):
        opt.step(q.closure(opt))
        resumed.step(r.closure(resumed))
    assert torch.equal(q.flat(), r.flat())
    assert torch.equal(opt.trust_stats()["cdat_lr"], resumed.trust_stats()["cdat_lr"])


def test_invalid_arguments_and_multi_process_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    q = Quadratic()
    with pytest.raises(ValueError, match="base"):
        CDAT(q.groups(), lr=1.0, base="adam")
    with pytest.raises(ValueError, match="sigma"):
        CDAT(q.groups(), lr=1.0, sigma=0.0)
    with pytest.raises(ValueError, match="closure"):
        CDAT(q.groups(), lr=1.0).step()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match="single process"):
        CDAT(q.groups(), lr=1.0)


def test_training_loop_runs_cdat_and_records_its_statistics(tiny_cfg, tmp_path: Path) -> None:
    summary = run(tiny_cfg("optimizer=cdat", "optimizer.base=lars", "log_trust_every=2", "epochs=1"))
    assert summary["status"] == "completed"
    header, *rows = read_jsonl(tmp_path / "run" / "trust.jsonl")
    assert [r["step"] for r in rows] == [2, 4]
    for row in rows:
        assert len(row["trust_ratio"]) == len(header["layers"])
        assert row["cdat_lr"] > 0 and row["numerator"] > 0 and isinstance(row["sharpness"], float)
