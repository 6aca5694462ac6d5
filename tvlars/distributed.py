"""Process-group set-up from torchrun or SLURM, the training device, and the reductions the loop uses.

Rank 0 is the only process with side effects (files, W&B, progress): see :func:`is_main`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tvlars.errors import UserError


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


def init(device: str = "auto", deterministic: bool = False) -> DistInfo:
    """Join the process group whenever launched by torchrun or SLURM (``WORLD_SIZE`` set, even to 1, so that a
    one-process torchrun run takes the DDP code path); NCCL on CUDA, gloo on CPU. Sets the current CUDA device.

    On CUDA, cuDNN autotunes its kernels (shapes are fixed within a run), which makes two runs differ by
    floating-point noise; ``deterministic=True`` asks for deterministic kernels instead (bit-exact reruns and
    resumes, slower; an op without a deterministic kernel warns)."""
    world = world_size_from_env()
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
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


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
