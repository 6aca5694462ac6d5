"""Process-group set-up from torchrun or SLURM, the training device, and the reductions the loop uses.

Rank 0 is the only process with side effects (files, W&B, progress): see :func:`is_main`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if name in os.environ:
            return int(os.environ[name])
    return default


def _export_submitit_env() -> None:
    """Inside a multi-task submitit (SLURM) job, export MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "MASTER_ADDR" not in os.environ:
        try:
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export()
        except Exception:  # noqa: BLE001 - not a submitit job (plain srun/torchrun set their own variables)
            pass


def world_size_from_env() -> int:
    """World size announced by torchrun (``WORLD_SIZE``) or SLURM (``SLURM_NTASKS`` with a master address)."""
    _export_submitit_env()
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_NTASKS" in os.environ and "MASTER_ADDR" in os.environ:
        return int(os.environ["SLURM_NTASKS"])
    return 1


def resolve_device(requested: str, local_rank: int) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun/SLURM (NCCL on CUDA, gloo on CPU); no-op otherwise.
    On CUDA, cuDNN autotunes its kernels (shapes are fixed within a run)."""
    world = world_size_from_env()
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    dev = resolve_device(device, local_rank)
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    if world > 1 and not dist.is_initialized():
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world))
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU. For timing, never in the training loop."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (identity in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over all processes, in place."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
