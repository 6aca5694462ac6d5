"""A test helper that fails at the first op which synchronises with the host or makes a tensor from host data.

    with NoHostSync():
        optimizer.step()          # raises HostSyncError at the offending op, its traceback names the line

What it catches, as seen by a ``TorchDispatchMode`` (so it works on the CPU, where nothing really waits):

* reading a value on the host: ``aten::_local_scalar_dense`` / ``aten::item`` (``.item()``, ``float(t)``,
  ``bool(t)``, a Python ``if`` on a tensor, a 0-d tensor passed where an op takes a Python scalar);
* copies between the host and a device: ``aten::_to_copy`` / ``aten::copy_`` with a CPU tensor on one
  side and a non-CPU device on the other;
* ops whose output shape depends on tensor values (the host must wait to allocate it): ``nonzero``,
  ``masked_select``, boolean-mask indexing, ``unique``, ``repeat_interleave`` without ``output_size``, and
  ``equal``/``is_nonzero``, which return a Python bool;
* tensors made from Python data or factories: ``aten::lift_fresh`` (``torch.tensor(...)``),
  ``aten::scalar_tensor`` (a Python scalar turned into a tensor, e.g. ``torch.where(c, x, 1.0)``),
  ``aten::full`` / ``ones`` / ``zeros``. On CUDA these are a host-to-device copy or an allocation and a
  fill per call; a hot path should create such tensors once (e.g. at the first step) and reuse them.

Not caught: ``*_like``/``new_*`` factories (made from a device tensor), and anything compiled by
``torch.compile`` (Dynamo does not run under a dispatch mode: check compiled code with ``fullgraph=True``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
READS = {aten._local_scalar_dense.default, aten.item.default}
HOST_DATA = {aten.lift_fresh.default, aten.lift_fresh_copy.default}  # torch.tensor(...): data from the host
FACTORIES = {aten.scalar_tensor.default, aten.full.default, aten.ones.default, aten.zeros.default}
COPIES = {aten._to_copy.default, aten.copy_.default}
DATA_DEPENDENT = {"aten.nonzero", "aten.masked_select", "aten._unique", "aten._unique2", "aten.unique_dim",
                  "aten.unique_consecutive", "aten.equal", "aten.is_nonzero"}


def _data_dependent(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the op's output shape (or result) depends on tensor values."""
    name = str(func.overloadpacket)
    if name == "aten.repeat_interleave":
        return kwargs.get("output_size") is None and (len(args) < 4 or args[3] is None)
    if name in ("aten.index", "aten.index_put", "aten.index_put_"):
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)
    return name in DATA_DEPENDENT


class HostSyncError(AssertionError):
    """An op in a ``NoHostSync`` block synchronised with the host or made a tensor from host data."""


def _crosses_host(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a copy op moves data between the CPU and another device."""
    if func is aten._to_copy.default:
        source, target = args[0].device, kwargs.get("device")
    else:  # copy_(self, src)
        target, source = args[0].device, args[1].device
    return target is not None and (source.type == "cpu") != (torch.device(target).type == "cpu")


class NoHostSync(TorchDispatchMode):
    """Raise :class:`HostSyncError` at the first forbidden op (see the module docstring).

    ``factories=False`` lets factory ops pass (allocations and fills, not syncs: e.g. inside torch's own double
    backward; ``torch.tensor`` of host data is still caught); ``host_resident`` are tensors that live on the host
    whatever the training device (torch's AdamW keeps its step counters there), whose reads are not device syncs.
    """

    def __init__(self, factories: bool = True, host_resident: Any = ()) -> None:
        super().__init__()
        self.factories, self.host_resident = factories, {id(t) for t in host_resident}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func in READS and id(args[0]) not in self.host_resident:
            raise HostSyncError(f"{func}: a tensor value is read on the host (.item(), float(), bool(), an if)")
        if _data_dependent(func, args, kwargs):
            raise HostSyncError(f"{func}: its output shape depends on tensor values (the host waits to allocate it)")
        if func in HOST_DATA:
            raise HostSyncError(f"{func}: a tensor is made from host data (torch.tensor); create it once and reuse it")
        if func in FACTORIES and self.factories:
            raise HostSyncError(f"{func}: a tensor is made from host data; create it once and reuse it")
        if func in COPIES and _crosses_host(func, args, kwargs):
            raise HostSyncError(f"{func}: a copy between the host and a device")
        return func(*args, **kwargs)
