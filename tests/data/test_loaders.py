"""The device path against the sampler path: same indices in the same order, same data, same training."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder

from tests.helpers import compose_config, tiny
from tvlars import distributed
from tvlars.build import build
from tvlars.data import TensorImageDataset, load_cifar10, loaders
from tvlars.data.cifar import write_fake_cifar10
from tvlars.data.fake import write_class_folders
from tvlars.data.imagenet import write_fake_imagenet
from tvlars.data.loaders import (
    DeviceLoader,
    ShardSampler,
    cpu_sharers,
    in_memory,
    train_sampler,
    usable_cpus,
    worker_count,
)
from tvlars.data.tinyimagenet import write_fake_tinyimagenet
from tvlars.errors import UserError
from tvlars.records import read_jsonl
from tvlars.run import run


def _indexed(n: int) -> TensorImageDataset:
    """Images whose every pixel is the item's index (mod 256) and labels equal to the index."""
    images = (torch.arange(n) % 256).to(torch.uint8)[:, None, None, None].expand(n, 1, 4, 4).contiguous()
    return TensorImageDataset(images, torch.arange(n))


@pytest.mark.parametrize("world_size", [1, 3])
def test_device_loader_visits_the_sampler_paths_indices_in_order(world_size: int) -> None:
    dataset = _indexed(100)
    for rank in range(world_size):
        sampler = train_sampler(len(dataset), rank, world_size, seed=7)
        reference = DataLoader(dataset, batch_size=8, sampler=sampler, drop_last=True)
        ours = DeviceLoader(dataset.images, dataset.labels, 8, sampler, drop_last=True)
        assert len(ours) == len(reference) == (100 // world_size) // 8
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            expected = [(x, y) for x, y in reference]
            got = list(ours)
            assert len(got) == len(expected)
            for (x, y), (ex, ey) in zip(got, expected, strict=True):
                assert torch.equal(y, ey) and torch.equal(x, ex)
        sampler.set_epoch(0)
        first = torch.cat([y for _, y in ours])
        sampler.set_epoch(1)
        assert not torch.equal(first, torch.cat([y for _, y in ours]))  # reshuffled every epoch


def test_evaluation_shards_cover_the_test_set_once_without_padding() -> None:
    dataset = _indexed(23)
    seen = []
    for rank in range(3):
        loader = DeviceLoader(dataset.images, dataset.labels, 4, ShardSampler(23, rank, 3))
        batches = list(loader)
        assert len(batches) == len(loader) == 2  # ceil(8 / 4), ceil(7 / 4): the last batch may be short
        seen += torch.cat([y for _, y in batches]).tolist()
    assert sorted(seen) == list(range(23))


def test_device_loader_applies_the_batch_transform() -> None:
    dataset = _indexed(10)
    loader = DeviceLoader(dataset.images, dataset.labels, 5, ShardSampler(10, 0, 1), transform=lambda x: x.float() * 2)
    x, y = next(iter(loader))
    assert x.dtype == torch.float32 and torch.equal(x[:, 0, 0, 0], y.float() * 2)


def test_in_memory_views_subsets_and_decodes_image_files(tmp_path: Path) -> None:
    dataset = _indexed(10)
    images, labels = in_memory(Subset(dataset, [3, 1, 4]))
    assert labels.tolist() == [3, 1, 4] and images[:, 0, 0, 0].tolist() == [3, 1, 4]
    write_fake_cifar10(tmp_path, n_train=20, n_test=20, format="imagefolder", ext="png")
    folder = load_cifar10(str(tmp_path), format="imagefolder").train
    images, labels = in_memory(folder)
    assert images.dtype == torch.uint8 and images.shape == (20, 3, 32, 32)
    for i in (0, 7, 19):
        pil, label = folder[i]
        assert labels[i] == label
        assert torch.equal(images[i], torch.as_tensor(list(pil.getdata()), dtype=torch.uint8).T.reshape(3, 32, 32))


def test_image_files_are_decoded_once_and_mapped_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first reader decodes every file of the folder into the cache; later readers of the folder or of a subset
    of it (a run's second split, linear evaluation, the sweep's next run) map it; a changed file decodes anew."""
    write_fake_cifar10(tmp_path, n_train=20, n_test=20, format="imagefolder", ext="png")
    folder = load_cifar10(str(tmp_path), format="imagefolder").train
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    decodes: list[int] = []
    decode = loaders._decode

    def counted(dataset: Dataset, *args: object) -> tuple[torch.Tensor, torch.Tensor]:
        decodes.append(len(dataset))
        return decode(dataset, *args)

    monkeypatch.setattr(loaders, "_decode", counted)
    images, labels = in_memory(Subset(Subset(folder, list(range(2, 20))), [5, 0, 9]))  # indices 7, 2, 11
    assert decodes == [20] and len(list(loaders.decoded_cache_dir().glob("*.npy"))) == 1
    whole, all_labels = in_memory(folder)
    assert decodes == [20]  # mapped
    assert torch.equal(images, whole[[7, 2, 11]]) and torch.equal(labels, all_labels[[7, 2, 11]])
    assert torch.equal(whole, decode(folder, 0, "")[0]) and all_labels.tolist() == [y for _, y in folder.samples]
    changed = Path(folder.samples[3][0])
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    in_memory(folder)
    assert decodes == [20, 20]


def _decode_on_two_processes(rank: int, store: str, root: str, out: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)
    tempfile.tempdir = f"{root}/tmp"  # the node's temporary directory
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        decode = loaders._decode
        counted = Path(out) / f"decoded.{rank}"
        loaders._decode = lambda *args: counted.write_text("yes") and decode(*args)
        images, _ = in_memory(load_cifar10(root, format="imagefolder").train)
        torch.save(images, Path(out) / f"images.{rank}")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_processes_of_a_node_map_what_local_rank_0_decoded(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path, n_train=20, n_test=10, format="imagefolder", ext="png")
    mp.spawn(_decode_on_two_processes, args=(str(tmp_path / "store"), str(tmp_path), str(tmp_path)), nprocs=2)
    assert [(tmp_path / f"decoded.{rank}").exists() for rank in range(2)] == [True, False]
    assert torch.equal(torch.load(tmp_path / "images.0"), torch.load(tmp_path / "images.1"))


def test_images_of_different_sizes_cannot_go_on_the_device(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "a" / "train", ["x"], n_per_class=1, size=32)
    write_class_folders(tmp_path / "a" / "train", ["y"], n_per_class=1, size=16)
    with pytest.raises(UserError, match="data.on_device needs images of one size"):
        in_memory(ImageFolder(str(tmp_path / "a" / "train")))


def test_without_augmentation_both_paths_train_identically(tmp_path: Path) -> None:
    """Same indices, same order, deterministic transforms: the two paths compute the same run."""
    rows = {}
    for on_device in ("false", "true"):
        cfg = compose_config(tiny(f"out_dir={tmp_path}", f"run_dir={tmp_path / on_device}", "dataset.channels=3",
                                  f"data.on_device={on_device}"))
        summary = run(cfg)
        assert summary["data_path"] == ("device" if on_device == "true" else "sampler")
        rows[on_device] = read_jsonl(tmp_path / on_device / "metrics.jsonl")
    for ours, ref in zip(rows["true"], rows["false"], strict=True):
        for key in ("train_loss", "train_top1", "test_loss", "test_top1"):
            assert ours[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-4), key


@pytest.mark.parametrize(("overrides", "path"), [
    ([], "device"),  # auto: in-memory data and a task with batched transforms
    (["data.on_device=false"], "sampler"),
    (["task=barlow_twins", "task.projector_dims=[32,32]", "task.linear_eval.epochs=1"], "device"),
])
def test_auto_chooses_the_device_path_where_it_applies(overrides: list[str], path: str) -> None:
    cfg = compose_config(tiny(*overrides))
    engine = build(cfg, distributed.init("cpu")).engine
    assert isinstance(engine.train_loader, DeviceLoader) == (path == "device")
    assert isinstance(engine.eval_loaders["test"], DeviceLoader) == (path == "device")


def test_on_device_true_refuses_large_images_before_training(tmp_path: Path) -> None:
    write_fake_tinyimagenet(tmp_path)  # 64 px: applies
    cfg = compose_config(tiny("dataset=tinyimagenet", f"data_root={tmp_path}", "data.on_device=true",
                              "batch_size=4", "dataset.augment.crop_padding=0", "dataset.val_size=8"))
    engine = build(cfg, distributed.init("cpu")).engine
    assert isinstance(engine.train_loader, DeviceLoader) and engine.train_loader.inputs.shape[1:] == (3, 64, 64)
    write_fake_imagenet(tmp_path, n_train=4, n_test=4, wnids=("n01", "n02"), size=160)
    for setting, expected in (("true", UserError), ("auto", None)):
        cfg = compose_config(tiny("dataset=imagenet", f"data_root={tmp_path}", f"data.on_device={setting}",
                                  "batch_size=2", "dataset.val_size=2"))
        if expected:
            with pytest.raises(UserError, match="data.on_device=true does not apply: .*128"):
                build(cfg, distributed.init("cpu"))
        else:
            engine = build(cfg, distributed.init("cpu")).engine
            assert isinstance(engine.train_loader, DataLoader)


def test_worker_count_uses_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)  # e.g. a 4-CPU SLURM job
    assert usable_cpus() == 4
    assert [worker_count(-1, cuda, 1), worker_count(-1, cuda, 2), worker_count(-1, cuda, 4)] == [3, 1, 0]
    assert worker_count(-1, cpu, 1) == 1 and worker_count(5, cuda, 1) == 5  # an explicit count is kept
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows: no affinity call
    assert usable_cpus() == 64 and worker_count(-1, cuda, 1) == 8


def test_cpus_are_shared_by_the_processes_of_this_host_whose_masks_overlap() -> None:
    """Not by the run's world size: two nodes of four GPUs each are eight processes, four per node."""
    node, other = frozenset(range(32)), frozenset(range(32))
    torchrun_on_two_nodes = [("a", node)] * 4 + [("b", other)] * 4  # torchrun's processes share its task's mask
    assert cpu_sharers(("a", node), torchrun_on_two_nodes) == 4
    bound = [("a", frozenset(range(8 * i, 8 * i + 8))) for i in range(4)]  # SLURM binds each task to 8 CPUs
    assert cpu_sharers(bound[2], bound + [("b", frozenset(range(8)))]) == 1
    assert cpu_sharers(("a", node), [("a", node)]) == 1  # one process
