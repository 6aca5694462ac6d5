"""Process-group set-up from torchrun or SLURM, the training device, and the reductions the loop uses.

Rank 0 is the only process with side effects (files, W&B, progress): see :func:`is_main`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.nn.functional import all_gather

from tvlars.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool = False  # in a process group: DDP wrap, SyncBatchNorm on CUDA, collectives

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if name in os.environ:
            return int(os.environ[name])
    return default


def _slurm_rendezvous() -> None:
    """Inside a SLURM job step of several tasks, export the torch.distributed variables of this task.

    Under submitit (the Hydra ``submitit_slurm`` launcher) its ``TorchDistributedEnvironment`` provides them:
    exported with ``overwrite=True`` (a cluster may pre-set ``MASTER_PORT`` or ``RANK``; submitit's values come from
    the same SLURM variables) and without restricting ``CUDA_VISIBLE_DEVICES`` (the device is chosen from the local
    rank by :func:`resolve_device`). A plain ``srun -n N`` with no rendezvous address fails here with one line,
    instead of N processes each training alone as rank 0 into the same run directory.
    """
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if tasks <= 1 or "WORLD_SIZE" in os.environ:
        return
    if os.environ.get("SUBMITIT_EXECUTOR"):
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        return
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise UserError(f"SLURM_NTASKS={tasks} but no rendezvous address (MASTER_ADDR/MASTER_PORT unset): launch one "
                        "task per node with torchrun, use the submitit launcher, or export MASTER_ADDR and MASTER_PORT")
    os.environ.setdefault("RANK", os.environ.get("SLURM_PROCID", "0"))
    os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    os.environ.setdefault("WORLD_SIZE", str(tasks))


def local_rank_from_env() -> int:
    """This process's rank on its node (torchrun's ``LOCAL_RANK``, SLURM's ``SLURM_LOCALID``), else 0."""
    return _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)


def world_size_from_env() -> int:
    """World size announced by torchrun or SLURM (``WORLD_SIZE`` after :func:`_slurm_rendezvous`), else 1."""
    _slurm_rendezvous()
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(requested: str, local_rank: int) -> torch.device:
    """The training device for ``device=auto|cpu|cuda|cuda:N``, checked: one ``UserError`` line otherwise.

    ``auto`` is CUDA when available, else the CPU. ``cuda`` without an index picks the local rank's GPU, or GPU 0
    when the job step sees a single GPU (clusters that bind one GPU per task)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UserError(f"device={requested} is not a device; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UserError(f"device={requested} is not supported; use auto, cpu, cuda or cuda:<index>")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UserError(f"device={requested} but CUDA is not available on this machine; use device=auto or cpu")
    index = device.index if device.index is not None else (0 if count == 1 else local_rank)
    if index >= count:
        raise UserError(f"device {requested} (local rank {local_rank}) needs GPU {index}, but this process sees "
                        f"{count} GPU(s); check CUDA_VISIBLE_DEVICES or the GPUs per task")
    return torch.device("cuda", index)


def set_tf32(enabled: bool) -> None:
    """Let float32 matmuls and cuDNN convolutions run on TF32 tensor cores (Ampere and later; 10 mantissa bits
    instead of 23), or not. torch ≥ 2.9 sets it through ``fp32_precision`` (mixing that API with the older
    ``allow_tf32`` flags raises), earlier versions through ``allow_tf32``."""
    if hasattr(torch.backends.cudnn, "conv"):
        precision = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def init(device: str = "auto", deterministic: bool = False, tf32: bool = True) -> DistInfo:
    """Join the process group whenever launched by torchrun or SLURM (``WORLD_SIZE`` set, even to 1, so that a
    one-process torchrun run takes the DDP code path); NCCL on CUDA, gloo on CPU. Sets the current CUDA device.

    On CUDA, cuDNN autotunes its kernels (shapes are fixed within a run), which makes two runs differ by
    floating-point noise; ``deterministic=True`` asks for deterministic kernels instead (bit-exact reruns and
    resumes, slower; an op without a deterministic kernel warns). ``tf32``: :func:`set_tf32` on CUDA (PyTorch's
    own default keeps float32 matmuls in full precision)."""
    world = world_size_from_env()
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    local_rank = local_rank_from_env()
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        set_tf32(tf32)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = dev.type == "cuda" and not deterministic
    launched = "WORLD_SIZE" in os.environ
    if launched and not dist.is_initialized():
        os.environ.setdefault("RANK", str(rank))
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev,
                    distributed=dist.is_initialized())


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU. For timing, never in the training loop."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (identity in a single process)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over all processes, in place."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_object(obj: T) -> list[T]:
    """Every process's ``obj`` (pickled), in rank order: ``[obj]`` in one process. A collective."""
    if not dist.is_initialized():
        return [obj]
    everyone: list[T | None] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, obj)
    return everyone  # type: ignore[return-value]


def from_rank0(compute: Callable[[], T]) -> T:
    """``compute()`` run on rank 0 only, its result sent to every process (pickled, one broadcast): a decision
    every rank must take alike, which rounding on another CPU could tip. A collective: every process calls it."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return compute()
    result = [compute() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(result, src=0)
    return result[0]  # type: ignore[return-value]


_gathering = True  # False inside per_process()


def gather(z: Tensor) -> Tensor:
    """Concatenate ``z`` from all processes along dim 0, differentiably: a loss over the global batch (SSL). The
    backward sums each process's gradient over ranks (×world size), which DDP's gradient averaging divides back.
    Identity in one process and inside :func:`per_process`."""
    if not (_gathering and dist.is_available() and dist.is_initialized()):
        return z
    return torch.cat(all_gather(z), dim=0)


@contextlib.contextmanager
def per_process() -> Iterator[None]:
    """Within the block :func:`gather` returns this process's own tensor: a loss over the global batch becomes the
    loss of this process's batch alone (what an instrument that measures per-process gradients needs)."""
    global _gathering
    before, _gathering = _gathering, False
    try:
        yield
    finally:
        _gathering = before


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def local_rank_first() -> Iterator[None]:
    """Run the block on each node's local rank 0 first; the other processes wait at a barrier and run it after, so
    a download into a directory they all read happens once per node, and they find it done. Every process must
    enter (a collective); local rank 0 reaches the barrier even when its block raises. Outside a process group,
    just the block."""
    first = local_rank_from_env() == 0
    if not first:
        barrier()
    try:
        yield
    finally:
        if first:
            barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
