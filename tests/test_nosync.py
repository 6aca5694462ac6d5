"""The NoHostSync helper catches host reads, value-dependent shapes, host-made tensors and host/device copies, and
lets device work pass."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tests.nosync import HostSyncError, NoHostSync

X = torch.arange(4.0)


def python_if() -> None:
    if X.sum() > 0:
        X.add_(0.0)


@pytest.mark.parametrize("offence", [
    lambda: X.sum().item(),
    lambda: float(X[0]),
    python_if,
    lambda: torch._foreach_add_([X], X[0]),  # the Scalar overload: the 0-d tensor is read on the host
    lambda: torch.tensor(1.0),
    lambda: torch.tensor(1.0, device="cpu", dtype=torch.float64),
    lambda: torch.ones((), device="meta"),
    lambda: torch.where(X > 0, X, 1.0),
    lambda: X.to("meta"),
    lambda: torch.empty(4, device="meta").copy_(X),
    lambda: X[X > 1],
    lambda: X.nonzero(),
    lambda: torch.unique(X),
    lambda: torch.repeat_interleave(X, X.long()),
    lambda: torch.equal(X, X),
], ids=["item", "float", "python-if", "foreach-scalar", "tensor", "tensor-device", "factory", "where-scalar",
        "host-to-device", "copy-to-device", "boolean-mask", "nonzero", "unique", "repeat-interleave", "equal"])
def test_catches(offence: Callable[[], object]) -> None:
    with pytest.raises(HostSyncError), NoHostSync():
        offence()


def test_lets_device_work_pass() -> None:
    y = X.clone()
    with NoHostSync():
        torch._foreach_add_([y], other=X[0])  # the Tensor overload
        torch.where(y > 0, y, torch.ones_like(y))
        y.new_full((2,), 3.0)
        y.mul_(0.5).clamp_(max=1.0)
        y.to(torch.float64)  # a dtype change on the same device
        torch.repeat_interleave(y, X.long(), output_size=6)  # the output size given: no wait
        y[X.long() % 2]  # integer indexing
    torch.testing.assert_close(y, (X + X[0]).mul(0.5).clamp(max=1.0))
