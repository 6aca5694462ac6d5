"""Device choice and rendezvous under torchrun, SLURM and submitit, with the cluster's environment faked."""

from __future__ import annotations

import os
import re
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torchvision

from tvlars import distributed
from tvlars.data import cifar, fashion_mnist, write_fake
from tvlars.errors import UserError


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """``gpus(n)`` makes torch report ``n`` visible CUDA devices."""

    def fake(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return fake


@pytest.mark.parametrize(
    ("visible", "requested", "local_rank", "expected"),
    [
        (4, "cuda", 2, "cuda:2"),  # one process per GPU, all GPUs visible
        (1, "cuda", 3, "cuda:0"),  # the cluster binds one GPU per task
        (4, "auto", 1, "cuda:1"),
        (2, "cuda:1", 0, "cuda:1"),
        (0, "auto", 0, "cpu"),
        (0, "cpu", 5, "cpu"),
    ],
)
def test_device_follows_the_local_rank(gpus, visible: int, requested: str, local_rank: int, expected: str) -> None:
    gpus(visible)
    assert distributed.resolve_device(requested, local_rank) == torch.device(expected)


@pytest.mark.parametrize(
    ("visible", "requested", "local_rank", "needle"),
    [
        (0, "cuda", 0, "CUDA is not available"),
        (2, "cuda", 3, "needs GPU 3, but this process sees 2 GPU(s)"),
        (2, "cuda:5", 0, "needs GPU 5"),
        (2, "tpu", 0, "device=tpu is not a device"),
        (2, "mps", 0, "device=mps is not supported"),
    ],
)
def test_impossible_devices_fail_in_one_line(gpus, visible: int, requested: str, local_rank: int,
                                             needle: str) -> None:
    gpus(visible)
    with pytest.raises(UserError, match=re.escape(needle)):
        distributed.resolve_device(requested, local_rank)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """None of the launch variables set; whatever the code under test exports is undone afterwards (setting each
    first makes monkeypatch record its original state, absent included)."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS",
                 "SLURM_PROCID", "SLURM_LOCALID", "SUBMITIT_EXECUTOR", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_plain_srun_without_rendezvous_fails_loudly(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SLURM_NTASKS", "4")
    clean_env.setenv("SLURM_PROCID", "2")
    with pytest.raises(UserError, match="SLURM_NTASKS=4 but no rendezvous address"):
        distributed.world_size_from_env()


def test_srun_with_a_rendezvous_address_gets_ranks_from_slurm(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "0",
                        "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}.items():
        clean_env.setenv(name, value)
    assert distributed.world_size_from_env() == 4
    assert (os.environ["RANK"], os.environ["LOCAL_RANK"]) == ("2", "0")


def test_submitit_export_overwrites_and_keeps_every_gpu_visible(clean_env: pytest.MonkeyPatch) -> None:
    """A cluster that pre-sets MASTER_PORT and RANK must not make every task its own rank 0."""
    calls: list[dict] = []

    class FakeEnvironment:
        def export(self, **kwargs: bool) -> FakeEnvironment:
            calls.append(kwargs)
            os.environ.update({"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"})
            return self

    helpers = types.ModuleType("submitit.helpers")
    helpers.TorchDistributedEnvironment = FakeEnvironment  # type: ignore[attr-defined]
    clean_env.setitem(sys.modules, "submitit.helpers", helpers)
    for name, value in {"SLURM_NTASKS": "8", "SUBMITIT_EXECUTOR": "slurm", "MASTER_PORT": "1234", "RANK": "0"}.items():
        clean_env.setenv(name, value)
    assert distributed.world_size_from_env() == 8
    assert calls == [{"set_cuda_visible_devices": False, "overwrite": True}]


def test_torchrun_with_one_process_takes_the_distributed_path(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WORLD_SIZE", "1")
    clean_env.setenv("RANK", "0")
    clean_env.setenv("MASTER_ADDR", "127.0.0.1")
    clean_env.setenv("MASTER_PORT", "29533")
    info = distributed.init("cpu")
    try:
        assert info.distributed and info.world_size == 1 and torch.distributed.is_initialized()
    finally:
        distributed.shutdown()
    clean_env.delenv("WORLD_SIZE")
    plain = distributed.init("cpu")
    assert not plain.distributed


def _fake_download(root: str, dataset: str, log: Path) -> None:
    """What a download leaves in ``root`` (the dataset's fake in its real format), slowly, logged in ``log``."""
    with log.open("a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)  # a real download takes long: another process starting one meanwhile would be caught here
    write_fake(dataset, Path(root), n_train=20, n_test=10)


def _load_on_two_processes(rank: int, store: str, dataset: str, root: str, log: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        if dataset == "cifar10":
            cifar.download_and_extract_archive = lambda *args, **kwargs: _fake_download(root, dataset, Path(log))
            bundle = cifar.load_cifar10(root, download=True, verify_checksums=False)
        else:
            torchvision.datasets.FashionMNIST = lambda *args, **kwargs: _fake_download(root, dataset, Path(log))
            bundle = fashion_mnist.load_fashion_mnist(root, download=True, system_dir=f"{root}/no-system-copy")
        assert len(bundle.train) == 20
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cifar10", "fashion_mnist"])
def test_a_node_downloads_a_dataset_once(dataset: str, tmp_path: Path) -> None:
    """Under DDP, local rank 0 downloads first while the node's other processes wait; they then find the files."""
    log = tmp_path / "downloads.log"
    mp.spawn(_load_on_two_processes, args=(str(tmp_path / "store"), dataset, str(tmp_path / "data"), str(log)),
             nprocs=2)
    assert len(log.read_text().splitlines()) == 1


@pytest.fixture
def fp32_precision() -> Iterator[None]:
    """Put the process-wide TF32 settings back after the test."""
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved


@pytest.mark.usefixtures("fp32_precision")
def test_tf32_is_on_for_cuda_runs_unless_turned_off(gpus, clean_env: pytest.MonkeyPatch) -> None:
    gpus(1)
    clean_env.setattr(torch.cuda, "set_device", lambda device: None)
    torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "ieee"
    distributed.init("cpu")
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"  # CPU runs leave the settings alone
    distributed.init("cuda")
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ("tf32", "tf32")
    distributed.init("cuda", tf32=False)
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ("ieee", "ieee")
