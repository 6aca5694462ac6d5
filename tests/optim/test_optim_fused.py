"""The fused (compiled) step: one graph per group, no recompilation when a schedule changes the LR every step,
no host syncs, the eager step's results and the eager step's ``state_dict``.

Dynamo's side (graphs, guards, recompiles) is checked for every optimizer with the ``eager`` backend, which
runs the traced graph op by op (seconds). Inductor's numerics are checked on a few optimizers (slow: the first
step compiles for tens of seconds on a CPU).
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
from torch._dynamo.utils import counters
from torch.optim import Optimizer

import tvlars.optim._trust as trust
from tests.optim.optim_cases import (
    FAST_CASES,
    make_groups,
    make_params,
    quartic_closure,
    relative_error,
    set_random_grads,
)
from tvlars.optim import CDAT, LAMB, LAMBC, LARS, TVLARS

STEPS = 50
NO_GRAD = 5  # gets no gradient every fourth step: a second specialisation of the adapting-free group


@pytest.fixture
def eager_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compile the fused step with Dynamo's ``eager`` backend (same graph, no code generation)."""
    compile_eager = functools.cache(lambda update: torch.compile(update, backend="eager", fullgraph=True,
                                                                 dynamic=False))
    monkeypatch.setattr(trust, "_compiled", compile_eager)


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def lockstep(name: str, dtype: torch.dtype = torch.float32,
             steps: int = STEPS) -> Iterator[tuple[int, list, list, tuple[Optimizer, Optimizer]]]:
    """Run an eager and a fused optimizer side by side on the same gradients, with the LR of every group
    changed at every step (a schedule). Yields after each step."""
    torch._dynamo.reset()  # Dynamo's cache is per process: start from no compiled variant
    eager_params, fused_params = make_params(dtype), make_params(dtype)
    eager = FAST_CASES[name](make_groups(eager_params))
    fused = FAST_CASES[name](make_groups(fused_params))
    eager.fused, fused.fused = False, True
    gen = torch.Generator().manual_seed(11)
    for step in range(steps):
        set_random_grads(eager_params, gen, skip=NO_GRAD if step % 4 == 3 else None)
        for p, q in zip(eager_params, fused_params, strict=True):
            q.grad = None if p.grad is None else p.grad.clone()
        for opt in (eager, fused):
            for i, group in enumerate(opt.param_groups):
                group["lr"] = (0.5 + 0.1 * i) * 0.97**step * (1.0 if name.startswith(("lars", "tvlars")) else 0.02)
        eager.step()
        fused.step()
        yield step, eager_params, fused_params, (eager, fused)


@pytest.mark.parametrize("name", FAST_CASES)
def test_fused_step_is_one_graph_per_group_without_recompiling(name: str, eager_backend: None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The first four steps compile three graphs (the two groups, and the second group missing a gradient);
    the next steps, with a new LR each, compile nothing and read no tensor value on the host."""
    start = graphs()
    steps = lockstep(name, steps=12)
    for _ in range(4):
        next(steps)
    assert graphs() - start == 3
    seen = []  # (eager, fused) parameters and observables after each step, compared after the checked steps
    with monkeypatch.context() as patch:
        for attr in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"):
            patch.setattr(torch.Tensor, attr, lambda *args, **kwargs: pytest.fail("host synchronisation"))
        for _, eager_params, fused_params, (eager, fused) in steps:
            seen.append(([p.clone() for p in eager_params], [q.clone() for q in fused_params],
                         list(eager.trust_stats().values()), list(fused.trust_stats().values())))
    assert graphs() - start == 3
    # not bit for bit: the fused step multiplies by the LR tensor where the eager one passes the LR to addcmul
    for eager_params, fused_params, eager_stats, fused_stats in seen:
        assert max(map(relative_error, fused_params, eager_params)) <= 1e-6
        for e, f in zip(eager_stats, fused_stats, strict=True):
            torch.testing.assert_close(f, e, rtol=1e-5, atol=0.0, equal_nan=True)


def train(name: str, fused: tuple[bool, bool], steps: int = 20, resume_at: int = 10) -> list[torch.Tensor]:
    """Parameters after ``steps`` steps; at ``resume_at`` the run continues in a new optimizer (on new
    parameters) from ``state_dict``. ``fused``: the step before and after the resume."""
    gen = torch.Generator().manual_seed(12)
    params = make_params()
    opt = FAST_CASES[name](make_groups(params))
    opt.fused = fused[0]
    for step in range(steps):
        if step == resume_at:
            state = copy.deepcopy(opt.state_dict())
            params = [torch.nn.Parameter(p.detach().clone()) for p in params]
            opt = FAST_CASES[name](make_groups(params))
            opt.fused = fused[1]
            opt.load_state_dict(state)
        set_random_grads(params, gen, skip=NO_GRAD if step % 4 == 3 else None)
        for group in opt.param_groups:
            group["lr"] *= 0.97
        opt.step()
    return params


@pytest.mark.parametrize("first", ["eager", "fused"])
@pytest.mark.parametrize("name", FAST_CASES)
def test_a_run_resumes_across_eager_and_fused(name: str, first: str, eager_backend: None) -> None:
    """Eager → fused and fused → eager through ``state_dict`` continue as an uninterrupted run."""
    torch._dynamo.reset()
    before = first == "fused"
    for p, q in zip(train(name, (before, not before)), train(name, (before, before)), strict=True):
        assert relative_error(p, q) <= 1e-6


# Inductor: fp32 is the eager step to rounding; bf16 parameters round differently (Inductor keeps fp32
# between ops where eager rounds each foreach op to bf16), so they agree to the stated tolerance.
TOLERANCE = {torch.float32: 1e-6, torch.bfloat16: 2e-2}  # ‖w_fused − w_eager‖ / ‖w_eager‖ after 50 steps


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dtype"), [("lars", torch.float32), ("tvlars", torch.float32),
                                             ("lamb", torch.float32), ("lamb_official", torch.float32),
                                             ("tvlars", torch.bfloat16), ("lamb", torch.bfloat16)])
def test_inductor_fused_step_equals_eager(name: str, dtype: torch.dtype) -> None:
    start = graphs()
    run = lockstep(name, dtype)
    for _ in range(4):
        next(run)
    compiled = graphs() - start
    *_, (_, eager_params, fused_params, _) = run
    for p, q in zip(eager_params, fused_params, strict=True):
        assert relative_error(q, p) <= TOLERANCE[dtype]
    assert compiled == 3 and graphs() - start == 3


@pytest.mark.parametrize("base", ["lars", "lamb"])
def test_cdat_direction_from_a_fused_base(base: str, eager_backend: None) -> None:
    """CDAT reads its base's direction (``capture``) from the compiled update: the same trajectory as eager."""
    torch._dynamo.reset()
    trajectories = []
    for fused in (False, True):
        params = make_params(torch.float64)
        opt = CDAT(make_groups(params), lr=10.0, base=base, weight_decay=0.01, fused=fused)
        for _ in range(5):
            opt.step(quartic_closure(opt, params))
        trajectories.append(params)
    for p, q in zip(*trajectories, strict=True):
        assert relative_error(q, p) <= 1e-9


# Twenty configurations of one process (a sweep's worker runs many runs in a row), beyond Dynamo's recompile limit
# of 8 per function if every value compiled a variant: LARS and TVLARS share LARS._update, LAMB and LAMBC LAMB's.
VARIANTS: list[Callable[[list], Optimizer]] = [
    *(functools.partial(LARS, lr=0.5, momentum=0.8 + 0.02 * i, trust_coefficient=0.001 * (i + 1)) for i in range(5)),
    *(functools.partial(TVLARS, lr=0.5, lam=0.01 * (i + 1), delay_steps=i, gamma_min=0.01 * i, norm_clamp=3.0 + i)
      for i in range(5)),
    *(functools.partial(LAMB, lr=0.01, betas=(0.85 + 0.01 * i, 0.99 + 0.001 * i), eps=10.0 ** -(i + 4))
      for i in range(5)),
    *(functools.partial(LAMBC, lr=0.01, clip_max=0.5 + 0.1 * i, weight_decay=0.001 * (i + 1)) for i in range(5)),
]


def _steps(factory: Callable[[list], Optimizer], fused: bool, steps: int = 3) -> list[torch.Tensor]:
    params = make_params()
    opt = factory(make_groups(params))
    opt.fused = fused
    gen = torch.Generator().manual_seed(13)
    for _ in range(steps):
        set_random_grads(params, gen)
        opt.step()
    return params


def test_twenty_configurations_in_one_process_share_the_fused_graphs(eager_backend: None) -> None:
    """Hyper-parameters reach the compiled step as device tensors: a new value is no new variant, so 20
    configurations compile each update's two groups once, and none falls back to the eager step."""
    torch._dynamo.reset()
    start = graphs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's warning would fail here
        for factory in VARIANTS:
            for p, q in zip(_steps(factory, fused=True), _steps(factory, fused=False), strict=True):
                assert relative_error(p, q) <= 1e-6
    assert graphs() - start <= 8  # LARS (with/without a norm clamp) and LAMB (with/without decay), two groups each


def test_the_recompile_limit_falls_back_to_the_eager_step_with_one_warning(eager_backend: None) -> None:
    """The adapting and the non-adapting group are two variants: with a limit of one, the second group's step
    hits it, and the optimizer warns once and goes on eagerly, as the eager step would."""
    torch._dynamo.reset()
    factory = functools.partial(LARS, lr=0.5)
    # Dynamo's own patch restores its config (monkeypatch's undo leaves the config module without the key)
    with torch._dynamo.config.patch(recompile_limit=1), pytest.warns(UserWarning, match="recompile_limit") as caught:
        fused = _steps(factory, fused=True, steps=5)
    assert len([w for w in caught if "recompile_limit" in str(w.message)]) == 1
    for p, q in zip(fused, _steps(factory, fused=False, steps=5), strict=True):
        assert relative_error(p, q) <= 1e-6
