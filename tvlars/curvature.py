"""Curvature of a loss through Hessian-vector products: shared by CDAT (one product per step) and the sharpness
instrument (power iteration for the dominant eigenvalue).

Both work on lists of tensors aligned with a list of parameters, never on flattened copies, and read no value on
the host, so they run on the device without synchronising.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def hessian_vector_product(grads: Sequence[Tensor], params: Sequence[Tensor], vectors: Sequence[Tensor],
                           retain_graph: bool = False) -> list[Tensor]:
    r"""``Hv = ∂(gᵀv)/∂w`` by double backward, aligned with ``params``.

    ``grads`` are ``∂loss/∂w`` computed with ``create_graph=True`` (``torch.autograd.grad`` or
    ``loss.backward(create_graph=True)``); a gradient without a graph (constant in ``w``) adds nothing.
    ``retain_graph=True`` keeps the graph for further products (power iteration); otherwise it is freed.
    """
    pairs = [(g, v) for g, v in zip(grads, vectors, strict=True) if g.requires_grad]
    if not pairs:
        return [torch.zeros_like(p) for p in params]
    with torch.enable_grad():
        return list(torch.autograd.grad([g for g, _ in pairs], params, grad_outputs=[v for _, v in pairs],
                                        retain_graph=retain_graph, materialize_grads=True))


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """``Σ_i ⟨a_i, b_i⟩`` in float64 (a 0-d device tensor)."""
    return torch.stack([torch.vdot(x.reshape(-1).double(), y.reshape(-1).double()) for x, y in
                        zip(a, b, strict=True)]).sum()


def power_iteration(matvec: Callable[[list[Tensor]], list[Tensor]], start: Sequence[Tensor],
                    iters: int) -> tuple[Tensor, list[Tensor]]:
    r"""The eigenvalue of largest magnitude of a symmetric operator, with its sign, and its unit eigenvector.

    ``v₀ = start/‖start‖``; for ``k = 1..iters``: ``λ_k = v_{k−1}ᵀ A v_{k−1}`` (Rayleigh quotient),
    ``v_k = A v_{k−1} / ‖A v_{k−1}‖``; returns ``(λ_iters, v_iters)``, ``iters`` products in all. The error of
    ``λ`` shrinks like ``(λ₂/λ₁)^{2k}`` (λ₁, λ₂: the two largest magnitudes), so a warm start from the previous
    eigenvector and a clear gap both help. If ``A v = 0`` the vector is kept (no division by zero). No host
    synchronisation: ``λ`` is a float64 device tensor.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1 (got {iters})")
    norm = dot(start, start).sqrt()
    vector = [v / norm.to(v.dtype) for v in start]
    value = norm.new_zeros(())
    for _ in range(iters):
        product = matvec(vector)
        value = dot(vector, product)
        length = dot(product, product).sqrt()
        vector = [torch.where(length > 0, p / length.clamp(min=1e-300).to(p.dtype), v)
                  for p, v in zip(product, vector, strict=True)]
    return value, vector
