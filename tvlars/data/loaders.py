"""Batches for the engine, two ways with the same index order: the sampler path (a DataLoader whose workers run
per-sample torchvision transforms) and the device path (the whole split as one tensor on the training device,
batches cut by index and augmented there by batched ops, no worker processes and no per-sample Python).

Both paths draw training indices from the same ``DistributedSampler`` (shuffled with ``seed + epoch``, sharded
``rank::world_size``, last partial batch dropped) and evaluation indices from :class:`ShardSampler`, so they
visit the same images in the same order; only the random augmentation draws differ.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, TensorDataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from tvlars import distributed
from tvlars.data._memory import TensorImageDataset
from tvlars.errors import UserError

log = logging.getLogger("tvlars")
BatchTransform = Callable[[Tensor], Any]
DECODED_FORMAT = 1  # in the decoded arrays' names: raise it when what _decode returns changes


class ShardSampler(Sampler[int]):
    """Evaluation sharding without padding: rank ``r`` gets indices ``r, r + W, r + 2W, …``."""

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


Placement = tuple[str, frozenset[int]]  # (host name, CPU affinity mask) of a process


def cpu_mask() -> frozenset[int]:
    """CPUs this process may run on (its affinity mask: a SLURM job's allocation or binding, ``taskset``), else all
    of them."""
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """The number of CPUs in :func:`cpu_mask`."""
    return len(cpu_mask())


def placement() -> Placement:
    """This process's host and CPU mask, for :func:`cpu_sharers`."""
    return socket.gethostname(), cpu_mask()


def cpu_sharers(mine: Placement, everyone: list[Placement]) -> int:
    """How many of the run's processes (``everyone``'s placements, this one's included) share this process's CPUs:
    those on its host whose masks overlap its own. Processes that ``torchrun`` starts share its mask; a SLURM task
    bound to its own CPUs shares them with nobody; other nodes' processes never count."""
    host, mask = mine
    return max(1, sum(1 for other_host, other_mask in everyone if other_host == host and other_mask & mask))


def worker_count(requested: int, device: torch.device, sharers: int) -> int:
    """``requested`` DataLoader workers, or for -1: 1 on CPU, up to 8 on CUDA, leaving a core to the trainer
    (cores = the CPUs this process may use, divided among the ``sharers`` processes using them: :func:`cpu_sharers`)."""
    if requested >= 0:
        return requested
    cores = max(1, usable_cpus() // sharers)
    return min(8 if device.type == "cuda" else 1, cores - 1) if cores > 1 else 0


def train_sampler(size: int, rank: int, world_size: int, seed: int) -> DistributedSampler:
    """The training order of both paths: a shuffled, sharded permutation per epoch (``set_epoch``)."""
    return DistributedSampler(range(size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                              drop_last=True)


def worker_context(workers: int) -> Any:
    """The start method of DataLoader workers: fork where the platform has it, so nothing is pickled, also inside
    launcher worker processes (joblib's loky, whose own processes cannot start children the default way)."""
    return mp.get_context("fork") if workers and "fork" in mp.get_all_start_methods() else None


def sampler_loader(dataset: Dataset, batch_size: int, sampler: Sampler[int], *, workers: int, device: torch.device,
                   drop_last: bool) -> DataLoader:
    """A DataLoader over ``dataset`` in ``sampler`` order. Workers are not persistent: each epoch draws their seeds
    from the per-epoch reseeded RNG (exact resume); they fork (:func:`worker_context`)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers,
                      pin_memory=device.type == "cuda", multiprocessing_context=worker_context(workers))


class DeviceLoader:
    """Batches ``(transform(inputs[idx]), labels[idx])`` for consecutive slices ``idx`` of the ``sampler`` order.

    ``inputs`` and ``labels`` live on the training device; one host-to-device copy of the epoch's indices per epoch,
    none per step. ``transform`` (``None`` = identity) is a batched op such as
    :class:`~tvlars.data.batch_transforms.BatchClassificationAugment`.
    """

    def __init__(self, inputs: Tensor, labels: Tensor, batch_size: int, sampler: Sampler[int],
                 transform: BatchTransform | None = None, drop_last: bool = False) -> None:
        self.inputs, self.labels = inputs, labels
        self.batch_size, self.sampler, self.transform, self.drop_last = batch_size, sampler, transform, drop_last

    def __len__(self) -> int:
        count = len(self.sampler)  # type: ignore[arg-type]
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, Tensor]]:
        order = torch.as_tensor(list(self.sampler), dtype=torch.int64).to(self.inputs.device, non_blocking=True)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            batch = self.inputs[index]
            yield (self.transform(batch) if self.transform else batch), self.labels[index]


def _tensor_view(dataset: Dataset) -> tuple[Tensor, Tensor] | None:
    """``(inputs, labels)`` of an in-memory dataset (or of a subset of one), else ``None``."""
    if isinstance(dataset, TensorImageDataset):
        return dataset.images, dataset.labels
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        inputs, labels = dataset.tensors
        return inputs, labels
    if isinstance(dataset, Subset) and (base := _tensor_view(dataset.dataset)) is not None:
        index = torch.as_tensor(dataset.indices, dtype=torch.int64)
        return base[0][index], base[1][index]
    return None


class _Decoded(Dataset):
    """Items ``(uint8 C×H×W tensor, label, index)`` of an image dataset (PIL images or tensors)."""

    def __init__(self, base: Dataset) -> None:
        self.base, self.to_tensor = base, v2.Compose([v2.ToImage(), v2.ToPureTensor()])

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        image, label = self.base[index]
        return self.to_tensor(image), label, index


def _item_name(dataset: Dataset, index: int) -> str:
    """The file of item ``index`` where the dataset lists its files (ImageFolder, Tiny-ImageNet), else ``item i``."""
    if isinstance(dataset, Subset):
        return _item_name(dataset.dataset, dataset.indices[index])
    samples = getattr(dataset, "samples", None)
    return str(samples[index][0]) if samples is not None else f"item {index}"


def _stack_same_size(batch: list[tuple[Tensor, int, int]], dataset: Dataset,
                     shape: torch.Size) -> tuple[Tensor, Tensor]:
    """Collate decoded images that all have ``shape`` (that of item 0); another size names its file."""
    for image, _, index in batch:
        if image.shape != shape:
            raise UserError(f"{_item_name(dataset, index)} is {tuple(image.shape)} but {_item_name(dataset, 0)} is "
                            f"{tuple(shape)} (C×H×W): data.on_device needs images of one size; "
                            "set data.on_device=false")
    return torch.stack([image for image, _, _ in batch]), torch.tensor([label for _, label, _ in batch])


def _decode(dataset: Dataset, workers: int, desc: str) -> tuple[Tensor, Tensor]:
    """Every image of ``dataset`` decoded to uint8 ``N×C×H×W`` (one size), in ``workers`` processes, with a
    progress bar; and the labels."""
    decoded = _Decoded(dataset)
    collate = functools.partial(_stack_same_size, dataset=dataset, shape=decoded[0][0].shape)
    batches = DataLoader(decoded, batch_size=500, num_workers=workers, collate_fn=collate,
                         multiprocessing_context=worker_context(workers))
    images, labels = [], []
    for x, y in tqdm(batches, desc=desc, unit="batch", leave=False, disable=None):  # no bar in log files
        images.append(x)
        labels.append(y)
    return torch.cat(images).contiguous(), torch.cat(labels).to(torch.int64)


def _listed_files(dataset: Dataset) -> tuple[Dataset, list[int]] | None:
    """``(base, indices)`` when ``dataset`` is a dataset that lists its image files (``samples``: ImageFolder,
    Tiny-ImageNet), or a chain of subsets of one; else ``None``."""
    indices: list[int] | None = None
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices] if indices is not None else list(dataset.indices)
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return None
    return dataset, indices if indices is not None else list(range(len(samples)))


def decoded_cache_dir() -> Path:
    """Where image-file datasets are kept decoded: ``tvlars-decoded`` in the temporary directory (``$TMPDIR``,
    node-local on most clusters, else ``/tmp``)."""
    return Path(tempfile.gettempdir()) / "tvlars-decoded"


def _decoded_files(base: Dataset, workers: int, desc: str) -> np.ndarray:
    """The images of every file ``base`` lists, decoded once per node: local rank 0 decodes them into an array in
    :func:`decoded_cache_dir` (written atomically) while the node's other processes wait, then every process maps it.
    Its name hashes the files' paths, sizes and modification times, so a later run (a sweep's next job, the test
    split's second reader, linear evaluation's features) maps it too, and a changed file decodes anew. Where it
    cannot be written, the process keeps what it decoded (with a warning) and the others decode for themselves."""
    stats = []
    for file, _ in base.samples:  # type: ignore[attr-defined]
        stat = os.stat(file)
        stats.append((str(file), stat.st_size, stat.st_mtime_ns))
    key = hashlib.sha1(json.dumps([DECODED_FORMAT, stats]).encode()).hexdigest()[:16]
    path = decoded_cache_dir() / f"{key}.npy"
    with distributed.local_rank_first():
        if not path.exists():
            images = _decode(base, workers, desc)[0].numpy()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as part:
                    np.save(part, images)
                os.replace(part.name, path)
            except OSError as exc:
                log.warning("warning: cannot keep the decoded %s in %s (%s); each process decodes it", desc,
                            path.parent, exc.strerror or exc)
                return images
    return np.load(path, mmap_mode="r")


def in_memory(dataset: Dataset, workers: int = 0, desc: str = "decoding") -> tuple[Tensor, Tensor]:
    """``(inputs, labels)`` of a whole dataset as tensors: uint8 ``N×C×H×W`` images (or a ``TensorDataset``'s
    features). In-memory datasets are used as they are; image files are decoded in ``workers`` processes, once
    per node and file set (:func:`_decoded_files`); other datasets are decoded here. Every image must have the same
    size."""
    view = _tensor_view(dataset)
    if view is not None:
        return view
    listed = _listed_files(dataset)
    if listed is None:
        return _decode(dataset, workers, desc)
    base, indices = listed
    labels = torch.tensor([label for _, label in base.samples], dtype=torch.int64)  # type: ignore[attr-defined]
    index = torch.as_tensor(indices, dtype=torch.int64)
    return torch.from_numpy(_decoded_files(base, workers, desc)[index.numpy()]), labels[index]  # a copy


def device_loader(dataset: Dataset, device: torch.device, batch_size: int, sampler: Sampler[int], *,
                  transform: BatchTransform | None, drop_last: bool, workers: int, desc: str) -> DeviceLoader:
    """A :class:`DeviceLoader` over ``dataset`` moved to ``device`` (decoded first if it holds image files)."""
    inputs, labels = in_memory(dataset, workers, desc)
    return DeviceLoader(inputs.to(device), labels.to(device), batch_size, sampler, transform, drop_last)
