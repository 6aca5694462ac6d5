"""Each update rule by hand: single steps with easy numbers, the zero-norm fallbacks, excluded groups,
the degenerate TVLARS (φ ≡ 1 is LARS), and argument validation."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from tests.optim.optim_cases import make_groups, make_params, set_random_grads
from tvlars.optim import LAMB, LAMBC, LARS, TVLARS, param_groups
from tvlars.optim.tvlars import tvlars_from_epochs

W0 = [3.0, 4.0]  # ‖w‖ = 5
G = [0.6, 0.8]


def one_tensor(values: list[float]) -> nn.Parameter:
    """A 1×n weight (2-D, so the paper's groups would adapt it)."""
    return nn.Parameter(torch.tensor([values], dtype=torch.float64))


def step_with(opt: torch.optim.Optimizer, p: nn.Parameter, grad: list[float]) -> None:
    p.grad = torch.tensor([grad], dtype=torch.float64)
    opt.step()


def close(p: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(p.detach().flatten(), torch.tensor(expected, dtype=p.dtype), rtol=1e-9, atol=1e-12)


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


# ------------------------------------------------------------------------------------------------ LARS
def test_lars_two_steps_by_hand() -> None:
    p = one_tensor(W0)
    opt = LARS([p], lr=2.0, momentum=0.9, weight_decay=0.1, trust_coefficient=0.03)
    step_with(opt, p, G)
    # u = g + 0.1 w = (0.9, 1.2), ‖u‖ = 1.5; r = 0.03 · 5 / 1.5 = 0.1; b = r u = (0.09, 0.12); w -= 2 b
    close(p, [2.82, 3.76])
    step_with(opt, p, G)
    u2 = [0.6 + 0.1 * 2.82, 0.8 + 0.1 * 3.76]  # = 0.294 · (3, 4): ‖u‖ = 1.47, ‖w‖ = 4.7
    r2 = 0.03 * 4.7 / 1.47
    b2 = [0.9 * 0.09 + r2 * u2[0], 0.9 * 0.12 + r2 * u2[1]]
    close(p, [2.82 - 2 * b2[0], 3.76 - 2 * b2[1]])
    stats = opt.trust_stats()
    assert stats["trust_ratio"].item() == pytest.approx(r2, rel=1e-6)
    assert stats["weight_norm"].item() == pytest.approx(4.7, rel=1e-6)
    assert stats["update_norm"].item() == pytest.approx(1.47, rel=1e-6)


def test_lars_nesterov_step_by_hand() -> None:
    p = one_tensor(W0)
    opt = LARS([p], lr=2.0, momentum=0.9, weight_decay=0.1, trust_coefficient=0.03, nesterov=True)
    step_with(opt, p, G)
    # b = r u = (0.09, 0.12); direction = r u + m b = 1.9 · (0.09, 0.12)
    close(p, [3.0 - 2 * 1.9 * 0.09, 4.0 - 2 * 1.9 * 0.12])


def test_lars_without_decay_uses_the_raw_gradient_and_leaves_it_untouched() -> None:
    p = one_tensor(W0)
    opt = LARS([p], lr=1.0, momentum=0.9, trust_coefficient=0.01)
    step_with(opt, p, G)
    close(p.grad, G)  # gradients are not modified
    close(p, [3.0 - 0.01 * 5 / 1.0 * 0.6, 4.0 - 0.01 * 5 / 1.0 * 0.8])  # ‖g‖ = 1


# ---------------------------------------------------------------------------------------------- TVLARS
def test_tvlars_two_steps_by_hand_with_clamp() -> None:
    p = one_tensor(W0)
    opt = TVLARS([p], lr=2.0, momentum=0.9, weight_decay=0.1, trust_coefficient=0.03,
                 lam=0.1, alpha=0.5, delay_steps=2, gamma_min=0.25, norm_clamp=4.0)
    step_with(opt, p, G)
    phi1 = 1 / (0.5 + math.exp(0.1 * (1 - 2))) + 0.25
    r1 = 0.03 * phi1 * 4.0 / 1.5  # ‖w‖ = 5 clamped to 4; ‖u‖ = 1.5 below the clamp
    w1 = [3.0 - 2 * r1 * 0.9, 4.0 - 2 * r1 * 1.2]
    close(p, w1)
    assert opt.trust_stats()["phi"].item() == pytest.approx(phi1, rel=1e-6)
    assert opt.trust_stats()["trust_ratio"].item() == pytest.approx(r1, rel=1e-6)
    assert opt.trust_stats()["weight_norm"].item() == pytest.approx(5.0, rel=1e-6)  # reported unclamped
    step_with(opt, p, G)
    phi2 = 1 / (0.5 + 1.0) + 0.25  # t = d
    u2 = [G[0] + 0.1 * w1[0], G[1] + 0.1 * w1[1]]
    r2 = 0.03 * phi2 * min(norm(w1), 4.0) / min(norm(u2), 4.0)
    b2 = [0.9 * r1 * 0.9 + r2 * u2[0], 0.9 * r1 * 1.2 + r2 * u2[1]]
    close(p, [w1[0] - 2 * b2[0], w1[1] - 2 * b2[1]])
    assert opt.trust_stats()["phi"].item() == pytest.approx(phi2, rel=1e-6)


def test_tvlars_with_unit_schedule_is_lars() -> None:
    """α = 0, λ = 0, γ_min = 0 gives φ ≡ 1: TVLARS is LARS, bit for bit."""
    lars_params, tv_params = make_params(), make_params()
    lars = LARS(make_groups(lars_params), lr=0.5, momentum=0.9, weight_decay=0.01)
    tv = TVLARS(make_groups(tv_params), lr=0.5, momentum=0.9, weight_decay=0.01, lam=0.0, alpha=0.0,
                delay_steps=0, gamma_min=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        set_random_grads(lars_params, gen)
        for p, q in zip(lars_params, tv_params, strict=True):
            q.grad = p.grad.clone()
        lars.step()
        tv.step()
        assert tv.trust_stats()["phi"].item() == 1.0
    for p, q in zip(lars_params, tv_params, strict=True):
        assert torch.equal(p, q)


def test_tvlars_forms() -> None:
    """The class defaults are the paper form; ``official`` is the released code; ``from_epochs`` the preset."""
    hp = ("alpha", "lam", "delay_steps", "gamma_min", "norm_clamp")
    group = TVLARS([one_tensor(W0)], lr=1.0).param_groups[0]
    assert tuple(group[k] for k in hp) == (1.0, 0.001, 0, 0.001, None)
    group = TVLARS.official([one_tensor(W0)], lr=1.0, lam=0.01).param_groups[0]
    assert tuple(group[k] for k in hp) == (0.1, 0.01, 0, 0.0, 10.0)
    group = TVLARS.from_epochs([one_tensor(W0)], lr=1.0, steps_per_epoch=7).param_groups[0]
    assert tuple(group[k] for k in hp) == (1.0, 0.001, 70, 0.001, None)
    assert TVLARS([one_tensor(W0)], lr=1.0, delay_epochs=2, steps_per_epoch=7).param_groups[0]["delay_steps"] == 14


def test_variants_take_their_parents_arguments_by_name() -> None:
    """TVLARS and LAMBC list only what they add; their signatures (config checks, help) show all arguments."""
    for variant, parent in ((TVLARS, LARS), (LAMBC, LAMB)):
        signature = inspect.signature(variant).parameters
        assert set(inspect.signature(parent).parameters) - {"nesterov"} <= set(signature)
        assert all(p.kind is not p.VAR_KEYWORD for p in signature.values())
    assert inspect.signature(LAMBC).parameters["clip_max"].default == 1.0
    assert LAMBC([one_tensor(W0)], lr=0.1, weight_decay=0.01).param_groups[0]["weight_decay"] == 0.01
    with pytest.raises(TypeError, match="TVLARS: .*momentun"):
        TVLARS([one_tensor(W0)], lr=0.1, momentun=0.9)


def test_tvlars_from_epochs_converts_the_delay() -> None:
    p = one_tensor(W0)
    opt = tvlars_from_epochs([p], lr=1.0, steps_per_epoch=13, delay_epochs=2.5)
    assert opt.param_groups[0]["delay_steps"] == 32  # round(32.5) (banker's rounding)
    assert (opt.param_groups[0]["alpha"], opt.param_groups[0]["gamma_min"]) == (1.0, 0.001)


# ------------------------------------------------------------------------------------------------ LAMB
def _adam_direction(m: list[float], v: list[float], eps: float) -> list[float]:
    return [mi / (math.sqrt(vi) + eps) for mi, vi in zip(m, v, strict=True)]


def test_lamb_two_steps_by_hand() -> None:
    p = one_tensor(W0)
    opt = LAMB([p], lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1)
    g1, g2 = [0.6, -0.8], [0.2, 0.4]
    step_with(opt, p, g1)
    # t = 1: m̂ = g, v̂ = g², so u = g / (|g| + ε) + 0.1 w
    u1 = [x / (abs(x) + 1e-6) + 0.1 * w for x, w in zip(g1, W0, strict=True)]
    trust1 = 5.0 / norm(u1)
    w1 = [w - 0.1 * trust1 * u for w, u in zip(W0, u1, strict=True)]
    close(p, w1)
    step_with(opt, p, g2)
    m = [0.9 * 0.1 * a + 0.1 * b for a, b in zip(g1, g2, strict=True)]
    v = [0.999 * 0.001 * a * a + 0.001 * b * b for a, b in zip(g1, g2, strict=True)]
    m_hat, v_hat = [x / (1 - 0.9**2) for x in m], [x / (1 - 0.999**2) for x in v]
    u2 = [d + 0.1 * w for d, w in zip(_adam_direction(m_hat, v_hat, 1e-6), w1, strict=True)]
    trust2 = norm(w1) / norm(u2)
    close(p, [w - 0.1 * trust2 * u for w, u in zip(w1, u2, strict=True)])
    stats = opt.trust_stats()
    assert stats["trust_ratio"].item() == pytest.approx(trust2, rel=1e-6)
    assert stats["update_norm"].item() == pytest.approx(norm(u2), rel=1e-6)


def test_lamb_official_settings_step_by_hand() -> None:
    """The paper code's LAMB: no bias correction, ‖w‖ clamped (here to 2) in the trust ratio."""
    p = one_tensor(W0)
    opt = LAMB([p], lr=0.1, weight_decay=0.1, bias_correction=False, weight_norm_clamp=2.0)
    step_with(opt, p, G)
    m = [0.1 * x for x in G]
    v = [0.001 * x * x for x in G]
    u = [d + 0.1 * w for d, w in zip(_adam_direction(m, v, 1e-6), W0, strict=True)]
    trust = 2.0 / norm(u)
    close(p, [w - 0.1 * trust * x for w, x in zip(W0, u, strict=True)])


@pytest.mark.parametrize(("weights", "clip", "expected_trust"), [
    (W0, {"clip_max": 1.0}, lambda trust: 1.0),  # trust 5/‖u‖ ≈ 3.5 clipped down to 1
    ([0.03, 0.04], {"clip_max": 1.0, "clip_min": 0.5}, lambda trust: 0.5),  # 0.05/‖u‖ ≈ 0.035 clipped up
    ([0.03, 0.04], {"clip_max": None}, lambda trust: trust),  # no bound: LAMB
])
def test_lambc_clips_the_trust_ratio(
    weights: list[float], clip: dict[str, Any], expected_trust: Callable[[float], float]
) -> None:
    p = one_tensor(weights)
    opt = LAMBC([p], lr=0.1, **clip)
    step_with(opt, p, [0.6, -0.8])
    u = [x / (abs(x) + 1e-6) for x in [0.6, -0.8]]  # t = 1 with bias correction, no decay
    trust = expected_trust(norm(weights) / norm(u))
    assert opt.trust_stats()["trust_ratio"].item() == pytest.approx(trust, rel=1e-6)
    close(p, [w - 0.1 * trust * x for w, x in zip(weights, u, strict=True)])


# ------------------------------------------------------------------------------ zero norms and exclusion
FALLBACK_CASES: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "lars": lambda ps: LARS(ps, lr=0.5, weight_decay=0.1),
    "tvlars": lambda ps: TVLARS(ps, lr=0.5, weight_decay=0.1, alpha=0.5, gamma_min=0.3, norm_clamp=10.0),
    "lamb": lambda ps: LAMB(ps, lr=0.5, weight_decay=0.1),
    "lambc": lambda ps: LAMBC(ps, lr=0.5, weight_decay=0.1, clip_max=3.0),
}


@pytest.mark.parametrize("name", FALLBACK_CASES)
def test_zero_weight_tensors_get_ratio_one(name: str) -> None:
    """A zero-initialised weight, bias and BN γ in an ADAPTING group: ratio 1 (the raw LR), no φ, no clip."""
    zero_weight, zero_bias, zero_gamma = (nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in
                                          [(2, 2), (3,), (4,)])
    opt = FALLBACK_CASES[name]([zero_weight, zero_bias, zero_gamma])
    for p in (zero_weight, zero_bias, zero_gamma):
        p.grad = torch.ones_like(p)
    opt.step()
    assert torch.equal(opt.trust_stats()["trust_ratio"], torch.ones(3))
    # LARS/TVLARS: u = g (the decay of a zero weight is 0), first momentum step = u. LAMB at t = 1: g/(|g|+ε).
    expected = 0.5 if name in ("lars", "tvlars") else 0.5 / (1 + 1e-6)
    for p in (zero_weight, zero_bias, zero_gamma):
        close(p, [-expected] * p.numel())


@pytest.mark.parametrize("name", ["lars", "tvlars"])
def test_zero_update_gets_ratio_one_and_no_step(name: str) -> None:
    p = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
    opt = FALLBACK_CASES[name]([p])
    p.grad = -0.1 * p.detach().clone()  # u = g + 0.1 w = 0
    opt.step()
    assert opt.trust_stats()["trust_ratio"].item() == 1.0 and opt.trust_stats()["update_norm"].item() == 0.0
    close(p, [1.0] * 4)


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()


@pytest.mark.parametrize("name", FALLBACK_CASES)
def test_excluded_group_gets_no_decay_and_no_adaptation(name: str) -> None:
    model = _bn_model()
    groups = param_groups(model, weight_decay=0.1)
    excluded = groups[1]["params"]
    assert groups[1]["adapt"] is False and all(p.ndim == 1 for p in excluded)
    opt = FALLBACK_CASES[name](groups)
    before = [p.detach().clone() for p in excluded]
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.2)
    opt.step()
    # LARS/TVLARS: plain momentum step w − lr·g; LAMB/LAMBC at t = 1: w − lr·g/(|g| + ε); no decay, no φ
    step = 0.5 * 0.2 if name in ("lars", "tvlars") else 0.5 * 0.2 / (0.2 + 1e-6)
    for p, b in zip(excluded, before, strict=True):
        torch.testing.assert_close(p.detach(), b - step, rtol=1e-12, atol=1e-12)
    n_adapted = len(groups[0]["params"])
    assert torch.equal(opt.trust_stats()["trust_ratio"][n_adapted:], torch.ones(len(excluded)))
    assert not torch.equal(opt.trust_stats()["trust_ratio"][:n_adapted], torch.ones(n_adapted))


# ---------------------------------------------------------------------------------------------- errors
def _params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.ones(2, 2))]


@pytest.mark.parametrize(("build", "message"), [
    (lambda: LARS(_params(), lr=-1.0), "lr must be >= 0 (got -1.0)"),
    (lambda: LARS(_params(), lr=float("nan")), "lr must be >= 0 (got nan)"),
    (lambda: LARS(_params(), lr=0.1, trust_coefficient=0.0), "trust_coefficient must be > 0 (got 0.0)"),
    (lambda: LARS(_params(), lr=0.1, momentum=1.0), "momentum must be in [0, 1) (got 1.0)"),
    (lambda: LARS(_params(), lr=0.1, weight_decay=-1e-4), "weight_decay must be >= 0 (got -0.0001)"),
    (lambda: LARS(_params(), lr=0.1, momentum=0.0, nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda: LARS([{"params": _params(), "weight_decay": -1.0}], lr=0.1), "weight_decay must be >= 0"),
    (lambda: LARS([{"params": _params(), "adapt": "yes"}], lr=0.1), "adapt must be True or False"),
    (lambda: TVLARS(_params(), lr=0.1, trust_coefficient=-1.0), "trust_coefficient must be > 0"),
    (lambda: TVLARS(_params(), lr=0.1, lam=-0.1), "lam must be >= 0 (got -0.1)"),
    (lambda: TVLARS(_params(), lr=0.1, alpha=-1.0), "alpha must be >= 0"),
    (lambda: TVLARS(_params(), lr=0.1, delay_steps=-5), "delay_steps must be >= 0"),
    (lambda: TVLARS(_params(), lr=0.1, gamma_min=-0.5), "gamma_min must be >= 0"),
    (lambda: TVLARS(_params(), lr=0.1, norm_clamp=0.0), "norm_clamp must be > 0 or None (got 0.0)"),
    (lambda: tvlars_from_epochs(_params(), lr=0.1, steps_per_epoch=0), "steps_per_epoch must be >= 1"),
    (lambda: tvlars_from_epochs(_params(), lr=0.1, steps_per_epoch=5, delay_epochs=-1.0),
     "delay_epochs must be >= 0"),
    (lambda: TVLARS(_params(), lr=0.1, delay_epochs=1.0), "steps_per_epoch must be >= 1 (got None)"),
    (lambda: TVLARS(_params(), lr=0.1, delay_steps=5, delay_epochs=1.0, steps_per_epoch=3),
     "give the delay in steps or in epochs, not both"),
    (lambda: LARS(_params(), lr=0.1, fused="yes"), "fused must be True or False or None"),
    (lambda: LAMB(_params(), lr=-0.1), "lr must be >= 0"),
    (lambda: LAMB(_params(), lr=0.1, betas=(0.9, 1.0)), "betas[1] must be in [0, 1) (got 1.0)"),
    (lambda: LAMB(_params(), lr=0.1, betas=(-0.1, 0.9)), "betas[0] must be in [0, 1) (got -0.1)"),
    (lambda: LAMB(_params(), lr=0.1, betas=(0.9,)), "betas must be a pair (beta1, beta2)"),
    (lambda: LAMB(_params(), lr=0.1, eps=-1e-8), "eps must be >= 0"),
    (lambda: LAMB(_params(), lr=0.1, bias_correction="no"), "bias_correction must be True or False"),
    (lambda: LARS(_params(), lr=0.1, nesterov=1), "nesterov must be True or False (got 1)"),
    (lambda: LAMB(_params(), lr=0.1, weight_norm_clamp=-1.0), "weight_norm_clamp must be > 0 or None"),
    (lambda: LAMBC(_params(), lr=0.1, clip_min=2.0, clip_max=1.0), "clip_min must be <= clip_max (got 2.0 > 1.0)"),
    (lambda: LAMBC(_params(), lr=0.1, clip_max=0.0), "clip_max must be > 0 or None"),
    (lambda: LAMBC(_params(), lr=0.1, clip_min=-1.0), "clip_min must be >= 0 or None"),
    (lambda: LAMBC(_params(), lr=0.1, betas=(0.9, 1.5)), "betas[1] must be in [0, 1)"),
])
def test_invalid_arguments_raise_clear_errors(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        build()


def test_valid_edge_values_are_accepted() -> None:
    LARS(_params(), lr=0.0, momentum=0.0)
    LAMB(_params(), lr=0.1, betas=[0.0, 0.0], eps=0.0)  # a list (Hydra passes lists) and β = 0
    LAMBC(_params(), lr=0.1, clip_min=1.0, clip_max=1.0)
    TVLARS(_params(), lr=0.1, lam=0.0, alpha=0.0, gamma_min=0.0, norm_clamp=None)
