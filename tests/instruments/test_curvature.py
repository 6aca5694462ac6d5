"""Hessian-vector products and power iteration on quadratics with a known spectrum."""

from __future__ import annotations

import pytest
import torch

from tvlars.curvature import hessian_vector_product, power_iteration

DTYPE = torch.float64


def symmetric(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    """``Q diag(eigenvalues) Qᵀ`` with a random orthogonal ``Q``."""
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), dtype=DTYPE,
                                       generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=DTYPE)) @ q.T


def test_hessian_vector_product_of_a_quadratic_is_h_times_v() -> None:
    """``f(W, b) = ½ wᵀHw`` with ``w = [vec(W), b]``; a parameter the loss ignores gets a zero product."""
    h = symmetric([5.0, 3.0, 2.0, 1.0, 0.5, -1.0])
    weight = torch.randn(2, 2, dtype=DTYPE, requires_grad=True)
    bias = torch.randn(2, dtype=DTYPE, requires_grad=True)
    unused = torch.randn(3, dtype=DTYPE, requires_grad=True)
    w = torch.cat([weight.reshape(-1), bias])
    params = [weight, bias, unused]
    grads = torch.autograd.grad(0.5 * w @ h @ w, params, create_graph=True, materialize_grads=True)
    v = [torch.randn_like(p) for p in params]
    hv = hessian_vector_product(grads, params, v)
    expected = h @ torch.cat([v[0].reshape(-1), v[1]])
    torch.testing.assert_close(torch.cat([hv[0].reshape(-1), hv[1]]), expected)
    assert torch.equal(hv[2], torch.zeros(3, dtype=DTYPE))


def test_gradients_without_a_graph_give_zero_products() -> None:
    p = torch.ones(3, requires_grad=True)
    assert torch.equal(hessian_vector_product([torch.ones(3)], [p], [torch.ones(3)])[0], torch.zeros(3))


def _matvec(h: torch.Tensor, shapes: list[torch.Size]):
    """``v ↦ Hv`` on ``v`` split into tensors of ``shapes``."""
    def matvec(v: list[torch.Tensor]) -> list[torch.Tensor]:
        out = h @ torch.cat([t.reshape(-1) for t in v])
        return [piece.reshape(shape) for piece, shape in zip(out.split([s.numel() for s in shapes]), shapes,
                                                                strict=True)]
    return matvec


@pytest.mark.parametrize(("eigenvalues", "dominant"), [
    ([10.0, 7.0, 4.0, 2.0, 1.0, 0.5, 0.1, -3.0], 10.0),  # positive-dominant: λ_max
    ([-12.0, 5.0, 4.0, 2.0, 1.0, 0.5, 0.1, -1.0], -12.0),  # negative-dominant: the largest |λ|, with its sign
])
def test_power_iteration_finds_the_dominant_eigenvalue_in_20_iterations(eigenvalues: list[float],
                                                                         dominant: float) -> None:
    h = symmetric(eigenvalues, seed=1)
    shapes = [torch.Size([2, 3]), torch.Size([2])]
    start = [torch.randn(s, dtype=DTYPE, generator=torch.Generator().manual_seed(2)) for s in shapes]
    value, vector = power_iteration(_matvec(h, shapes), start, iters=20)
    assert value.item() == pytest.approx(dominant, rel=1e-3)
    flat = torch.cat([t.reshape(-1) for t in vector])
    assert flat.norm().item() == pytest.approx(1.0)
    residual = h @ flat - dominant * flat
    assert residual.norm().item() < 0.05 * abs(dominant)


def test_power_iteration_warm_started_from_the_eigenvector_is_exact_at_once() -> None:
    h = symmetric([4.0, 3.9, 1.0])
    eigenvector = torch.linalg.eigh(h).eigenvectors[:, -1]
    value, _ = power_iteration(lambda v: [h @ v[0]], [3.0 * eigenvector], iters=1)
    assert value.item() == pytest.approx(4.0, rel=1e-12)


def test_power_iteration_keeps_the_vector_when_the_product_vanishes() -> None:
    value, vector = power_iteration(lambda v: [torch.zeros_like(v[0])], [torch.ones(4, dtype=DTYPE)], iters=3)
    assert value.item() == 0.0
    torch.testing.assert_close(vector[0], torch.full((4,), 0.5, dtype=DTYPE))
