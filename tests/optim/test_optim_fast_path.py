"""The fast multi-tensor optimizers: equal to the references, free of host syncs, compile, resume, observe."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from tests.nosync import NoHostSync
from tests.optim.optim_cases import (
    CASES,
    FAST_CASES,
    ForeachListsMatch,
    make_groups,
    make_params,
    relative_error,
    set_random_grads,
)
from tvlars.optim import TVLARS

STEPS = 50
NO_GRAD = 5  # index of the parameter that gets no gradient every third step


@pytest.mark.parametrize("name", CASES)
def test_fast_equals_reference_over_random_steps(name: str) -> None:
    fast_factory, reference_factory = CASES[name]
    fast_params, ref_params = make_params(), make_params()
    fast, ref = fast_factory(make_groups(fast_params)), reference_factory(make_groups(ref_params))
    gen = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        set_random_grads(fast_params, gen, skip=NO_GRAD if step % 3 == 2 else None)
        for p, q in zip(fast_params, ref_params, strict=True):
            q.grad = None if p.grad is None else p.grad.clone()
        lr = 0.5 * fast.param_groups[0]["lr"] if step == 25 else fast.param_groups[0]["lr"]  # a schedule
        for group in (*fast.param_groups, *ref.param_groups):
            group["lr"] = lr
        fast.step()
        ref.step()
        for i, (p, q) in enumerate(zip(fast_params, ref_params, strict=True)):
            assert relative_error(p, q) <= 1e-6, f"{name}: tensor {i} differs at step {step + 1}"
        stats = fast.trust_stats()
        for key, expected in ref.last_stats.items():
            assert torch.equal(stats[key].isnan(), expected.isnan()), key
            ok = ~expected.isnan()
            torch.testing.assert_close(stats[key][ok], expected[ok], rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("name", FAST_CASES)
def test_bf16_params_run_and_stay_finite(name: str) -> None:
    params = make_params(torch.bfloat16)
    start = [p.detach().clone() for p in params]
    opt = FAST_CASES[name](make_groups(params))
    gen = torch.Generator().manual_seed(2)
    for _ in range(STEPS):
        set_random_grads(params, gen)
        opt.step()
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in params)
    assert any(not torch.equal(p, s) for p, s in zip(params, start, strict=True))
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in opt.trust_stats().values())


@pytest.mark.parametrize("name", FAST_CASES)
def test_state_dict_round_trip_continues_bit_identically(name: str) -> None:
    params = make_params()
    opt = FAST_CASES[name](make_groups(params))
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        set_random_grads(params, gen)
        opt.step()
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed_params = [torch.nn.Parameter(p.clone()) for p in saved["params"]]
    resumed = FAST_CASES[name](make_groups(resumed_params))
    resumed.load_state_dict(saved["optim"])
    assert resumed.trust_stats() == {}
    for _ in range(5):
        set_random_grads(params, gen)
        for p, q in zip(params, resumed_params, strict=True):
            q.grad = p.grad.clone()
        opt.step()
        resumed.step()
    for p, q in zip(params, resumed_params, strict=True):
        assert torch.equal(p, q)
    for key, value in opt.trust_stats().items():
        assert torch.equal(value, resumed.trust_stats()[key]), key


def test_tvlars_step_count_is_saved_and_restored() -> None:
    params = make_params()
    opt = TVLARS.official(make_groups(params), lr=0.1)
    gen = torch.Generator().manual_seed(4)
    for _ in range(7):
        set_random_grads(params, gen)
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    assert saved["param_groups"][0]["step"].item() == 7  # the adapting group's t
    fresh = TVLARS.official(make_groups(make_params()), lr=0.1)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["step"].item() == 7
    set_random_grads(fresh.param_groups[0]["params"] + fresh.param_groups[1]["params"], gen)
    fresh.step()
    expected_phi = 1.0 / (0.1 + math.exp(0.001 * 8))  # the released schedule, t = 8
    assert fresh.trust_stats()["phi"].item() == pytest.approx(expected_phi, rel=1e-6)


@pytest.mark.parametrize("name", FAST_CASES)
def test_step_compiles_into_one_graph_and_matches_eager(name: str) -> None:
    """Dynamo traces ``step`` with ``fullgraph=True``: any ``.item()``, ``float(t)`` or branch on a tensor
    value would be a graph break and fail here. Two steps with a changing LR (a schedule)."""
    torch._dynamo.reset()
    eager_params, compiled_params = make_params(), make_params()
    eager = FAST_CASES[name](make_groups(eager_params))
    compiled = FAST_CASES[name](make_groups(compiled_params))
    step = torch.compile(compiled.step, backend="eager", fullgraph=True)
    gen = torch.Generator().manual_seed(5)
    for i in range(3):
        set_random_grads(eager_params, gen)
        for p, q in zip(eager_params, compiled_params, strict=True):
            q.grad = p.grad.clone()
        for opt in (eager, compiled):
            for group in opt.param_groups:
                group["lr"] = group["lr"] * (1 + i)
        eager.step()
        step()
        for p, q in zip(eager_params, compiled_params, strict=True):
            torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)
        for key, value in eager.trust_stats().items():
            torch.testing.assert_close(compiled.trust_stats()[key], value, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("name", FAST_CASES)
def test_step_and_trust_stats_never_read_tensor_values_on_the_host(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = make_params()
    opt = FAST_CASES[name](make_groups(params))
    set_random_grads(params, torch.Generator().manual_seed(6), skip=NO_GRAD)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("host synchronisation")

    for attr in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, attr, forbidden)
    for _ in range(2):
        opt.step()
        opt.trust_stats()


@pytest.mark.parametrize("dense", [False, True], ids=["cpu", "cuda-like"])
@pytest.mark.parametrize("name", FAST_CASES)
def test_steps_after_the_first_neither_sync_nor_make_host_tensors(
    name: str, dense: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first steps create the state (and, on CUDA, one layout per set of tensors with gradients); every
    later ``step()`` and ``trust_stats()`` runs under NoHostSync (host reads, host-made tensors, host/device
    copies), also with CUDA's per-tensor scale layout."""
    monkeypatch.setattr("tvlars.optim._trust.dense_scales", lambda device: dense)
    params = make_params()
    opt = FAST_CASES[name](make_groups(params))
    gen = torch.Generator().manual_seed(6)
    for step in range(5):
        set_random_grads(params, gen, skip=NO_GRAD if step % 2 else None)
        if step < 2:
            opt.step()
            continue
        with NoHostSync():
            opt.step()
            opt.trust_stats()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", FAST_CASES)
def test_cuda_like_eager_step_gives_foreach_ops_matching_lists(
    name: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the layout the eager step uses off the CPU, no foreach op gets a list of 0-d per-tensor scalars
    beside the parameters (it would leave CUDA's multi-tensor fast path), and the result is the CPU path's.
    One parameter is channels-last, so the scales must take its strides."""
    cpu_params, dense_params = make_params(dtype), make_params(dtype)
    for params in (cpu_params, dense_params):
        params[0].data = params[0].data.to(memory_format=torch.channels_last)
    cpu, dense = FAST_CASES[name](make_groups(cpu_params)), FAST_CASES[name](make_groups(dense_params))
    gen = torch.Generator().manual_seed(9)
    for _ in range(3):
        set_random_grads(cpu_params, gen)
        for p, q in zip(cpu_params, dense_params, strict=True):  # gradients in their parameter's layout
            p.grad = torch.empty_like(p).copy_(p.grad)
            q.grad = p.grad.clone()
        cpu.step()
        with monkeypatch.context() as patch, ForeachListsMatch():
            patch.setattr("tvlars.optim._trust.dense_scales", lambda device: True)
            dense.step()
    tolerance = {} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}  # bf16 scales round the ratios
    for p, q in zip(cpu_params, dense_params, strict=True):
        torch.testing.assert_close(q, p, **tolerance)


def test_foreach_check_catches_0d_scalars_on_the_cpu_path() -> None:
    params = make_params()
    opt = FAST_CASES["lars"](make_groups(params))
    set_random_grads(params, torch.Generator().manual_seed(9))
    with pytest.raises(AssertionError, match="_foreach_addcmul_"), ForeachListsMatch():
        opt.step()


@pytest.mark.parametrize("name", FAST_CASES)
def test_trust_stats_layout(name: str) -> None:
    params = make_params()
    groups = make_groups(params)
    opt = FAST_CASES[name](groups)
    assert opt.trust_stats() == {}
    set_random_grads(params, torch.Generator().manual_seed(7), skip=NO_GRAD)
    opt.step()
    stats = opt.trust_stats()
    expected_keys = {"trust_ratio", "weight_norm", "update_norm"} | ({"phi"} if name == "tvlars" else set())
    assert set(stats) == expected_keys
    order = [p for g in groups for p in g["params"]]  # param_groups order
    for key in ("trust_ratio", "weight_norm", "update_norm"):
        assert stats[key].shape == (len(order),) and stats[key].dtype == torch.float32
    position = {id(p): i for i, p in enumerate(order)}
    missing = position[id(params[NO_GRAD])]
    for key in ("trust_ratio", "weight_norm", "update_norm"):
        assert stats[key].isnan().nonzero().flatten().tolist() == [missing], key
    present = [i for i in range(len(order)) if i != missing]
    # weight norms are taken before the update: compare with a fresh copy of the initial values
    initial = [p for g in make_groups(make_params()) for p in g["params"]]
    expected = torch.stack([initial[i].detach().norm() for i in present])
    torch.testing.assert_close(stats["weight_norm"][present], expected)
    excluded = [position[id(p)] for p in groups[1]["params"] if p is not params[NO_GRAD]]
    assert torch.equal(stats["trust_ratio"][excluded], torch.ones(len(excluded)))
    if name == "tvlars":
        assert stats["phi"].shape == ()


def test_trust_stats_skip_empty_groups() -> None:
    params = make_params()
    opt = FAST_CASES["lars"]([*make_groups(params), {"params": []}])
    set_random_grads(params, torch.Generator().manual_seed(8))
    opt.step()
    assert opt.trust_stats()["trust_ratio"].shape == (len(params),)
