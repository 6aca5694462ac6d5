"""Hydra entry point: ``python -m tvlars.train [group=option ...] [key=value ...]`` (or under ``torchrun``).

compose → validate → distributed set-up → build data, model, optimizer, schedule → resume or skip →
:class:`~tvlars.engine.Engine` → ``summary.json``. Problems a user can fix end in one ``error:`` line and
exit code 2 before training starts; a diverged run ends with status ``diverged`` and exit code 0.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
import torchvision
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

import tvlars
from tvlars import distributed
from tvlars.config import LrScaling, Precision, Progress, instantiate_node, resolved_lr, run_id, validate
from tvlars.data import DataBundle, DatasetInfo
from tvlars.data.loaders import (
    DeviceLoader,
    ShardSampler,
    device_loader,
    sampler_loader,
    subset,
    train_sampler,
    worker_count,
)
from tvlars.distributed import DistInfo
from tvlars.engine import Engine, EngineOptions, TrainState, seed_all
from tvlars.errors import UserError
from tvlars.loggers import NullLogger
from tvlars.optim import param_groups
from tvlars.records import RunRecords, read_jsonl
from tvlars.tasks.base import BatchTransforms, Task
from tvlars.tasks.linear_eval import save_backbone

log = logging.getLogger("tvlars")
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def group_choices() -> dict[str, str]:
    """The config-group options chosen on the command line (empty when composed without @hydra.main)."""
    try:
        choices = HydraConfig.get().runtime.choices
    except ValueError:
        return {}
    return {k: v for k, v in choices.items() if not k.startswith("hydra") and v is not None}


def default_run_dir(cfg: DictConfig, rid: str) -> Path:
    choices = group_choices()
    groups = ("task", "dataset", "model", "optimizer", "schedule")
    parts = [cfg.name] if cfg.name else [choices[g] for g in groups if g in choices] or ["run"]
    return Path(cfg.out_dir) / "-".join([*parts, f"b{cfg.batch_size}", f"s{cfg.seed}", rid])


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


def make_loaders(cfg: DictConfig, dist: DistInfo, data: DataBundle, task: Task) -> tuple[Any, Any]:
    """(train, test) loaders of the device path where it applies (see :func:`device_transforms`), else of the
    sampler path. Both visit the same indices in the same order; per-process batch = batch_size / world_size."""
    per_device, eval_per_device = cfg.batch_size // dist.world_size, cfg.eval_batch_size // dist.world_size
    workers = worker_count(cfg.num_workers, dist.device, dist.world_size)
    sampler = train_sampler(len(data.train), dist.rank, dist.world_size, cfg.seed)
    if len(sampler) < per_device:
        raise UserError(f"batch_size={cfg.batch_size} exceeds the training set ({len(data.train)} images); "
                        "lower batch_size")
    shard = ShardSampler(len(data.test), dist.rank, dist.world_size)
    augment = dict(cfg.dataset.get("augment", {}))
    transforms = device_transforms(cfg.data.on_device, task, data.info, augment)
    if transforms is not None:
        train_tf, test_tf = transforms
        return (device_loader(data.train, dist.device, per_device, sampler, train_tf, True, workers, "train set"),
                device_loader(data.test, dist.device, eval_per_device, shard, test_tf, False, workers, "test set"))
    train_set, test_set = task.datasets(data, augment)
    return (sampler_loader(train_set, per_device, sampler, workers, dist.device, drop_last=True),
            sampler_loader(test_set, eval_per_device, shard, workers, dist.device, drop_last=False))


def environment(dist: DistInfo) -> dict[str, Any]:
    device = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else platform.processor() or "cpu"
    return {"git_commit": git_commit(), "device": str(dist.device), "device_name": device,
            "world_size": dist.world_size, "hostname": platform.node(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "tvlars": tvlars.__version__}}


def summarize(records: RunRecords) -> dict[str, Any]:
    """Best and final metrics from ``metrics.jsonl`` (the single source of per-epoch truth)."""
    rows = read_jsonl(records.metrics)
    evaluated = [r for r in rows if "test_top1" in r]
    out: dict[str, Any] = {"epochs_completed": rows[-1]["epoch"] if rows else 0}
    if evaluated:
        best = max(evaluated, key=lambda r: r["test_top1"])
        final = evaluated[-1]
        out |= {"best_test_top1": best["test_top1"], "best_test_top5": best.get("test_top5"),
                "best_epoch": best["epoch"], "final_test_top1": final["test_top1"],
                "final_test_top5": final.get("test_top5"), "final_test_loss": final.get("test_loss")}
    if rows:
        speeds = sorted(r["train_images_per_s"] for r in rows)
        out |= {"final_train_loss": rows[-1].get("train_loss"), "images_per_s": speeds[len(speeds) // 2]}
    return out


def build_engine(cfg: DictConfig, dist: DistInfo, records: RunRecords | None = None,
                 logger: NullLogger | None = None) -> tuple[Engine, DatasetInfo]:
    """Data, task, model, optimizer and schedule from ``cfg``, ready to train. Data comes first, so a missing
    dataset fails before any model is built; nothing is written to disk here."""
    data: DataBundle = instantiate_node(cfg.dataset, "dataset", skip=("augment",))
    data.train, data.test = subset(data.train, cfg.train_subset), subset(data.test, cfg.test_subset)
    task: Task = instantiate_node(cfg.task, "task", device=dist.device)
    data = task.prepare(data)
    train_loader, test_loader = make_loaders(cfg, dist, data, task)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.epochs

    seed_all(cfg.seed)
    info = data.info
    backbone = instantiate_node(cfg.model, "model", num_classes=info.num_classes, in_channels=info.in_channels,
                                image_size=info.image_size)
    model = task.build_model(backbone).to(dist.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = resolved_lr(cfg)
    groups = param_groups(task.optimized_module(model), float(cfg.optimizer.get("weight_decay", 0.0)))
    optimizer = instantiate_node(cfg.optimizer, "optimizer", params=groups, lr=lr,
                                 steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    schedule = instantiate_node(cfg.schedule, "schedule", base_lr=lr, steps_per_epoch=steps_per_epoch,
                                total_steps=total_steps)
    train_model: torch.nn.Module = model
    if dist.world_size > 1:
        if dist.device.type == "cuda":
            train_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
        train_model = DistributedDataParallel(train_model, device_ids=[dist.device.index] if
                                              dist.device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    opts = EngineOptions(epochs=cfg.epochs, seed=cfg.seed, run_id=run_id(cfg), precision=Precision(cfg.precision).value,
                         channels_last=cfg.channels_last, eval_every=cfg.eval_every,
                         checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
                         log_trust_every=cfg.log_trust_every,
                         progress_bar=dist.is_main and _progress_bar(Progress(cfg.progress).value))
    engine = Engine(opts, dist, task, model, train_model, optimizer, schedule, train_loader, test_loader,
                    records, logger or NullLogger())
    return engine, info


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment described by a composed config; returns its summary (rank 0) or ``{}``."""
    validate(cfg, distributed.world_size_from_env())
    dist = distributed.init(cfg.device)
    try:
        return _run(cfg, dist)
    finally:
        distributed.shutdown()


def _run(cfg: DictConfig, dist: DistInfo) -> dict[str, Any]:
    rid = run_id(cfg)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg, rid)
    records = RunRecords(run_dir)
    previous = records.read_summary()
    if previous is not None and previous.get("run_id") != rid:
        raise UserError(f"{run_dir} holds a different run (run id {previous.get('run_id')} != {rid}); "
                        "choose another run_dir or delete that directory")
    if previous is not None and previous.get("status") in ("completed", "diverged"):
        if dist.is_main:
            log.info("run %s already %s; skipping (delete %s to rerun)", rid, previous["status"], run_dir)
        return previous

    logger = instantiate_node(cfg.logger, "logger", run_dir=str(run_dir)) if dist.is_main else NullLogger()
    engine, info = build_engine(cfg, dist, records if dist.is_main else None, logger)
    optimizer = engine.optimizer
    lr, steps_per_epoch = resolved_lr(cfg), len(engine.train_loader)
    data_path = "device" if isinstance(engine.train_loader, DeviceLoader) else "sampler"
    if dist.is_main:
        records.prepare()
    checkpoint = records.load_checkpoint() if cfg.checkpoint_every else None
    state = TrainState()
    if checkpoint is not None:
        if checkpoint.get("run_id") != rid:
            raise UserError(f"checkpoint {records.checkpoint} belongs to run {checkpoint.get('run_id')}, not {rid}; "
                            "delete it or choose another run_dir")
        state = engine.load_state_dict(checkpoint)
        if dist.is_main:
            records.truncate_after(state.epoch)
            log.info("resuming %s from epoch %d (step %d)", run_dir, state.epoch, state.step)
    elif dist.is_main:
        records.truncate_after(0)

    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    base: dict[str, Any] = {"run_id": rid, "run_dir": str(run_dir), "seed": cfg.seed, "config": resolved,
                            "lr": lr, "steps_per_epoch": steps_per_epoch, "data_path": data_path,
                            **environment(dist)}
    if dist.is_main:
        records.write_config(OmegaConf.to_yaml(cfg, resolve=True))
        records.write_summary({**base, "status": "running"})
        sizes = ", ".join(f"{len(g['params'])} tensors (wd={g['weight_decay']}, adapt={g['adapt']})"
                          for g in optimizer.param_groups)
        log.info("run %s: %s | lr %.5g (%s scaling) | global batch %d = %d x %d | %d steps/epoch | %s data path "
                 "| groups: %s", rid, run_dir, lr, LrScaling(cfg.lr_scaling).value,
                 cfg.batch_size, dist.world_size, cfg.batch_size // dist.world_size, steps_per_epoch, data_path, sizes)
        logger.start(resolved, state.logger_id)
        state.logger_id = logger.run_id
    status, error = "failed", None
    try:
        outcome = engine.fit(state)
        if outcome == "completed" and getattr(engine.task, "linear_eval", None):
            outcome, offline = _linear_eval_phase(cfg, dist, engine, info, run_dir)
            base |= offline
        status = outcome
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        summary = {**base, "status": status, "error": error, "wall_time_s": state.wall_time_s,
                   "steps": state.step, "logger_id": state.logger_id}
        if dist.is_main:
            summary |= summarize(records)
            records.write_summary(summary)
            logger.log({f"summary/{k}": v for k, v in summary.items() if isinstance(v, int | float)}, step=state.step)
            logger.finish(exit_code=0 if status != "failed" else 1)
            log.info("%s: %s", status, {k: summary.get(k) for k in ("best_test_top1", "final_test_top1",
                                                                    "images_per_s", "wall_time_s")})
    return summary if dist.is_main else {}


def linear_eval_config(cfg: DictConfig, run_dir: Path, settings: dict[str, Any]) -> DictConfig:
    """The offline linear-evaluation run that follows SSL pre-training, in ``<run_dir>/linear_eval``:
    frozen backbone, SGD with momentum, cosine to 0 stepped every step, its own batch size and epochs."""
    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    sub.task = {"_target_": "tvlars.tasks.LinearEval", "backbone": str(run_dir / "backbone.pt")}
    sub.optimizer = {"_target_": "torch.optim.SGD", "lr": settings["lr"], "momentum": settings["momentum"],
                     "nesterov": False, "weight_decay": settings["weight_decay"]}
    sub.schedule = {"_target_": "tvlars.schedules.WarmupCosine", "warmup_epochs": 0, "floor": 0.0}
    sub.logger = {"_target_": "tvlars.loggers.NullLogger"}
    sub.batch_size, sub.epochs, sub.lr_scaling = settings["batch_size"], settings["epochs"], "none"
    sub.eval_batch_size = max(sub.eval_batch_size, settings["batch_size"])
    sub.run_dir, sub.compile, sub.channels_last, sub.log_trust_every = str(run_dir / "linear_eval"), False, False, 10**9
    return sub


def _linear_eval_phase(cfg: DictConfig, dist: DistInfo, engine: Engine, info: DatasetInfo,
                       run_dir: Path) -> tuple[str, dict[str, Any]]:
    """Save the pre-trained backbone, run the linear evaluation, return its status and test metrics."""
    if dist.is_main:
        model_kwargs = {"num_classes": info.num_classes, "in_channels": info.in_channels,
                        "image_size": info.image_size}
        save_backbone(run_dir / "backbone.pt", engine.model.encoder["backbone"],
                      OmegaConf.to_container(cfg.model, resolve=True), model_kwargs)
    distributed.barrier()
    result = _run(linear_eval_config(cfg, run_dir, engine.task.linear_eval), dist)
    keys = ("best_test_top1", "best_test_top5", "best_epoch", "final_test_top1", "final_test_top5", "final_test_loss")
    offline = {k: result[k] for k in keys if k in result}
    offline["linear_eval"] = {"run_dir": str(run_dir / "linear_eval"), "status": result.get("status"),
                              "epochs": result.get("epochs_completed")}
    return result.get("status", "completed"), offline


def _progress_bar(mode: str) -> bool:
    return mode == "bar" or (mode == "auto" and sys.stderr.isatty())


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """CLI entry point; returns the best test top-1 for Hydra sweepers."""
    logging.basicConfig(level=logging.INFO if distributed.world_size_from_env() == 1 or
                        os.environ.get("RANK", "0") == "0" else logging.WARNING,
                        format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S", force=True)
    try:
        summary = run(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return summary.get("best_test_top1")


def one_line(exc: BaseException) -> str:
    """A Hydra/OmegaConf composition failure as one line naming the key or option and the fix."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = exc.__cause__
    if isinstance(exc, MissingConfigException):
        match = re.search(r"Could not find '([^/']+)/([^']+)'", str(exc))
        if match:
            group, option = match.groups()
            options = sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
            return f"unknown option {group}={option}; available: {', '.join(options)}"
    if isinstance(cause, ConfigAttributeError | ConfigKeyError):
        key = getattr(cause, "full_key", None) or str(cause)
        return (f"unknown config key '{key}' (misspelled?); "
                "`python -m tvlars.train --cfg job` prints every key with its value")
    if isinstance(cause, ValidationError):
        return f"{cause.full_key}: {str(cause).splitlines()[0]}"
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def check_composition(argv: list[str]) -> None:
    """Compose the config as ``main`` will and turn a failure into one ``error:`` line (exit code 2).

    Skipped for multirun and Hydra's own flags (``--cfg``, ``--help``...), where Hydra reports itself.
    """
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose(config_name="config", overrides=argv)
    except Exception as exc:  # noqa: BLE001 - every composition failure is a config error
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    check_composition(sys.argv[1:])
    main()
