"""Builders: a composed config → data, task, model, optimizer, schedule and loaders, as one :class:`Built`.

Data comes first, so a missing dataset fails before any model is built; nothing is written to disk here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig

from tvlars import distributed
from tvlars.config import DATASET_KEYS, Precision, Progress, instantiate_node, resolved_lr, run_dir, run_id, val_size
from tvlars.data import DataBundle, DatasetInfo
from tvlars.data.loaders import (
    DeviceLoader,
    ShardSampler,
    cpu_sharers,
    device_loader,
    placement,
    sampler_loader,
    train_sampler,
    worker_count,
)
from tvlars.data.splits import subset, validation_split
from tvlars.distributed import DistInfo
from tvlars.engine import Engine, EngineOptions, progress_mode, seed_all
from tvlars.errors import UserError
from tvlars.instruments import Instruments
from tvlars.loggers import NullLogger
from tvlars.optim import param_groups
from tvlars.records import RunRecords
from tvlars.tasks.base import BatchTransforms, Task

log = logging.getLogger("tvlars")


@dataclass
class Built:
    """Everything a run needs, built from one config: the engine and the facts the builder decided."""

    engine: Engine
    info: DatasetInfo
    lr: float  # optimizer.lr after lr_scaling
    steps_per_epoch: int
    data_path: str  # "device" or "sampler"
    run_id: str


def device_transforms(setting: bool | str, task: Task, info: DatasetInfo,
                      augment: dict[str, Any]) -> BatchTransforms | None:
    """The task's batched transforms if the device path is on (``data.on_device``) and applies, else ``None``."""
    if setting is False:
        return None
    try:
        transforms = task.batch_transforms(info, augment)
        reason = None if transforms is not None else f"task {type(task).__name__} has no batched transforms"
    except ValueError as exc:
        transforms, reason = None, str(exc)
    if reason is None:
        return transforms
    if setting is True:
        raise UserError(f"data.on_device=true does not apply: {reason}; set data.on_device=auto or false")
    log.info("data path: sampler (%s)", reason)
    return None


def split_data(cfg: DictConfig, data: DataBundle) -> DataBundle:
    """Hold the validation split out of the training set (``dataset.val_size``), then cut the fixed subsets."""
    train, val = validation_split(data.train, val_size(cfg))
    return DataBundle(train=subset(train, cfg.train_subset), test=subset(data.test, cfg.test_subset), info=data.info,
                      val=subset(val, cfg.val_subset) if len(val) else None)


def make_loaders(cfg: DictConfig, dist: DistInfo, data: DataBundle, task: Task) -> tuple[Any, dict[str, Any]]:
    """The train loader and the evaluation loaders (``{"val": ..., "test": ...}``, val only with a validation
    split) of the device path where it applies (see :func:`device_transforms`), else of the sampler path. Both
    visit the same indices in the same order; per-process batch = batch_size / world_size."""
    per_device, eval_per_device = cfg.batch_size // dist.world_size, cfg.eval_batch_size // dist.world_size
    here = placement()  # the run's processes on this host that use these CPUs divide them
    workers = worker_count(cfg.num_workers, dist.device, cpu_sharers(here, distributed.all_gather_object(here)))
    sampler = train_sampler(len(data.train), dist.rank, dist.world_size, cfg.seed)
    if len(sampler) < per_device:
        raise UserError(f"batch_size={cfg.batch_size} exceeds the training set ({len(data.train)} images); "
                        "lower batch_size")
    splits = {"val": data.val, "test": data.test} if data.val is not None else {"test": data.test}
    for split, dataset in splits.items():
        if len(dataset) < dist.world_size:
            raise UserError(f"the {split} set has {len(dataset)} images, fewer than the {dist.world_size} processes; "
                            f"raise {split}_subset or use fewer processes")
    shards = {split: ShardSampler(len(dataset), dist.rank, dist.world_size) for split, dataset in splits.items()}
    augment = dict(cfg.dataset.get("augment", {}))
    transforms = device_transforms(cfg.data.on_device, task, data.info, augment)
    if transforms is not None:
        train_tf, eval_tf = transforms
        train = device_loader(data.train, dist.device, per_device, sampler, transform=train_tf, drop_last=True,
                              workers=workers, desc="train set")
        return train, {split: device_loader(dataset, dist.device, eval_per_device, shards[split], transform=eval_tf,
                                            drop_last=False, workers=workers, desc=f"{split} set")
                       for split, dataset in splits.items()}
    # the task attaches its evaluation transforms to the test split of a bundle: one bundle per evaluated split
    train_set = task.datasets(data, augment)[0]
    evaluated = {split: task.datasets(DataBundle(data.train, dataset, data.info), augment)[1]
                 for split, dataset in splits.items()}
    return (sampler_loader(train_set, per_device, sampler, workers=workers, device=dist.device, drop_last=True),
            {split: sampler_loader(dataset, eval_per_device, shards[split], workers=workers, device=dist.device,
                                   drop_last=False) for split, dataset in evaluated.items()})


def run_name(cfg: DictConfig) -> str:
    """The name at the start of progress lines: the run directory's (parallel jobs of a sweep share one log)."""
    return run_dir(cfg).name


def wrap_for_training(model: torch.nn.Module, cfg: DictConfig, dist: DistInfo) -> torch.nn.Module:
    """The module the loop trains: SyncBatchNorm + DDP when in a process group (CUDA: SyncBatchNorm), then
    ``torch.compile`` if asked. The bare ``model`` keeps its parameters (checkpoints, evaluation)."""
    train_model = model
    if dist.distributed:
        if dist.device.type == "cuda":
            train_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
        # the DDP class where the 0.1 interface keeps it (see tvlars.train); imported here since tvlars.train imports us
        from tvlars import train

        train_model = train.DistributedDataParallel(train_model, device_ids=[dist.device.index] if
                                                    dist.device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    return train_model


def check_process_group(cfg: DictConfig, dist: DistInfo) -> None:
    """Refuse an optimizer that needs a closure (CDAT: ``backward(create_graph=True)``) in a process group: DDP's
    reducer gives it gradients without a graph, and :func:`wrap_for_training` wraps every run of a process group in
    DDP, a one-process ``torchrun`` included (so that one GPU rehearses the multi-GPU code path)."""
    if dist.distributed and getattr(get_object(cfg.optimizer._target_), "needs_closure", False):
        raise UserError(f"optimizer {cfg.optimizer._target_} differentiates through the loss twice, which "
                        "DistributedDataParallel does not support, and every torchrun or SLURM launch trains through "
                        "it (one process too); run it without a launcher: python -m tvlars.train ...")


def build(cfg: DictConfig, dist: DistInfo, records: RunRecords | None = None,
          logger: NullLogger | None = None) -> Built:
    """Data, task, model, optimizer, schedule and loaders from ``cfg``, ready to train."""
    check_process_group(cfg, dist)
    data = split_data(cfg, instantiate_node(cfg.dataset, "dataset", skip=DATASET_KEYS))
    info = data.info
    task: Task = instantiate_node(cfg.task, "task", device=dist.device)
    seed_all(cfg.seed)
    backbone = instantiate_node(cfg.model, "model", num_classes=info.num_classes, in_channels=info.in_channels,
                                image_size=info.image_size, device=dist.device)
    model = task.build_model(backbone, info).to(dist.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = task.prepare(data, backbone)
    train_loader, eval_loaders = make_loaders(cfg, dist, data, task)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.epochs
    lr = resolved_lr(cfg)
    groups = param_groups(task.optimized_module(model), float(cfg.optimizer.get("weight_decay", 0.0)))
    optimizer = instantiate_node(cfg.optimizer, "optimizer", params=groups, lr=lr,
                                 steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    schedule = instantiate_node(cfg.schedule, "schedule", base_lr=lr, steps_per_epoch=steps_per_epoch,
                                total_steps=total_steps)
    rid = run_id(cfg)
    opts = EngineOptions(epochs=cfg.epochs, seed=cfg.seed, run_id=rid, precision=Precision(cfg.precision).value,
                         channels_last=cfg.channels_last, eval_every=cfg.eval_every,
                         checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
                         log_trust_every=cfg.log_trust_every, progress=progress_mode(Progress(cfg.progress).value),
                         name=run_name(cfg), precise_bn_images=cfg.precise_bn_images)
    engine = Engine(opts, dist, task=task, model=model, train_model=wrap_for_training(model, cfg, dist),
                    optimizer=optimizer, schedule=schedule, train_loader=train_loader, eval_loaders=eval_loaders,
                    records=records, logger=logger,
                    instruments=Instruments.from_config(cfg, model, dist.world_size))
    data_path = "device" if isinstance(train_loader, DeviceLoader) else "sampler"
    return Built(engine, info, lr, steps_per_epoch, data_path, rid)
