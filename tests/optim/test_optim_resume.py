"""Resuming on another device: ``load_state_dict`` puts every tensor of the optimizer's state (the groups' step
counters, CDAT's tuner) on the parameters' device, as copies, whatever device and dtype the checkpoint was read
to. On the CPU the ``meta`` device stands in for CUDA; the real round trip runs where CUDA exists."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

from tests.optim.optim_cases import FAST_CASES, make_groups, make_params, quartic_closure, set_random_grads
from tvlars.optim import CDAT, LAMB, LAMBC, LARS, TVLARS

Factory = Callable[[list], torch.optim.Optimizer]
CDAT_CASES: dict[str, Factory] = {base: (lambda g, base=base: CDAT(g, lr=10.0, base=base, weight_decay=0.01))
                                  for base in ("lars", "lamb")}


def trained_state(factory: Factory, steps: int = 3) -> dict:
    """The state dict of ``factory``'s optimizer after ``steps`` steps on the CPU."""
    params = make_params()
    opt = factory(make_groups(params))
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        if getattr(opt, "needs_closure", False):
            opt.step(quartic_closure(opt, params))
        else:
            set_random_grads(params, gen)
            opt.step()
    return opt.state_dict()


def group_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor in ``opt``'s param groups (the step counters) and CDAT's base and tuner state."""
    out = [v for g in opt.param_groups for v in g.values() if isinstance(v, torch.Tensor)]
    if isinstance(opt, CDAT):
        out += [*group_tensors(opt.base), opt._ema, opt._t]
    return out


@pytest.mark.parametrize("name", [*FAST_CASES, *CDAT_CASES])
def test_loaded_state_moves_to_the_parameters_device(name: str) -> None:
    factory = {**FAST_CASES, **CDAT_CASES}[name]
    saved = trained_state(factory)
    meta_params = [nn.Parameter(p.detach().to("meta")) for p in make_params()]
    opt = factory(make_groups(meta_params))
    opt.load_state_dict(saved)
    tensors = group_tensors(opt)
    assert tensors and all(t.device.type == "meta" for t in tensors), [t.device for t in tensors]
    for p in meta_params:  # the step runs on the device, with nothing left on the CPU
        p.grad = torch.randn_like(p)
    if isinstance(opt, CDAT):
        opt.step(quartic_closure(opt, meta_params))
    else:
        opt.step()
    assert all(t.device.type == "meta" for t in group_tensors(opt))


@pytest.mark.parametrize("name", [*FAST_CASES, *CDAT_CASES])
def test_loaded_state_takes_the_state_dtype_and_is_a_copy(name: str) -> None:
    factory = {**FAST_CASES, **CDAT_CASES}[name]
    saved = trained_state(factory)
    loaded_groups = [g for g in (*saved["param_groups"], *saved.get("base", {}).get("param_groups", []))
                     if "step" in g]  # CDAT's own groups hold no tensor
    for group in loaded_groups:  # a checkpoint whose counters were saved in another dtype
        group["step"] = group["step"].double()
    tuner = saved.get("tuner", {})
    for key in tuner:
        tuner[key] = tuner[key].double()
    loaded = [*(g["step"] for g in loaded_groups), *tuner.values()]
    snapshot = [t.clone() for t in loaded]
    opt = factory(make_groups(make_params()))
    opt.load_state_dict(saved)
    assert all(t.dtype == torch.float32 for t in group_tensors(opt))
    params = [p for g in opt.param_groups for p in g["params"]]
    if isinstance(opt, CDAT):
        opt.step(quartic_closure(opt, params))
    else:
        set_random_grads(params, torch.Generator().manual_seed(1))
        opt.step()
    for old, new in zip(snapshot, loaded, strict=True):  # stepping wrote nothing into the loaded dict
        assert torch.equal(old, new)


CUDA_CASES: dict[str, Callable[[list, bool], torch.optim.Optimizer]] = {
    "lars": lambda g, fused: LARS(g, lr=0.5, fused=fused),
    "tvlars": lambda g, fused: TVLARS(g, lr=0.5, fused=fused),
    "lamb": lambda g, fused: LAMB(g, lr=0.01, fused=fused),
    "lambc": lambda g, fused: LAMBC(g, lr=0.01, fused=fused),
    "cdat_lars": lambda g, fused: CDAT(g, lr=10.0, base="lars", weight_decay=0.01, fused=fused),
    "cdat_lamb": lambda g, fused: CDAT(g, lr=10.0, base="lamb", weight_decay=0.01, fused=fused),
}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("name", CUDA_CASES)
def test_cuda_round_trip_through_a_cpu_mapped_checkpoint(name: str, fused: bool) -> None:
    """The bug this guards: LAMB crashed on the first step after ``torch.load(map_location="cpu")``; fused: the
    compiled step after such a load (``make gpu-check`` runs both)."""
    factory = CUDA_CASES[name]
    params = [nn.Parameter(p.detach().cuda()) for p in make_params()]
    opt = factory(make_groups(params), fused)
    for _ in range(3):
        _cuda_step(opt, params)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, map_location="cpu", weights_only=False)
    resumed_params = [nn.Parameter(p.cuda()) for p in saved["params"]]
    resumed = factory(make_groups(resumed_params), fused)
    resumed.load_state_dict(saved["optim"])
    assert all(t.is_cuda for t in group_tensors(resumed))
    for _ in range(3):
        torch.manual_seed(1)
        _cuda_step(opt, params)
        torch.manual_seed(1)
        _cuda_step(resumed, resumed_params)
    for p, q in zip(params, resumed_params, strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0)


def _cuda_step(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    if isinstance(opt, CDAT):
        opt.step(quartic_closure(opt, params))
        return
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
