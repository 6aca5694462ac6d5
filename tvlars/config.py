"""The structured top-level config, its cross-field validation, and `_target_` instantiation with clear errors.

Hydra checks types and unknown keys at composition time (the schema below plus struct mode for the group
YAMLs); :func:`validate` checks what types cannot (ranges, divisibility, that every ``_target_`` accepts
its keys) and raises :class:`~tvlars.errors.UserError` before anything is built.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from tvlars.errors import UserError
from tvlars.paths import CONFIG_DIR


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class LrScaling(str, Enum):
    none = "none"  # lr as given
    linear = "linear"  # lr × batch_size / base_batch_size (Goyal et al. 2017; the paper's warm-up baselines)
    sqrt = "sqrt"  # lr × sqrt(batch_size / base_batch_size) (common for LAMB)


class Progress(str, Enum):
    auto = "auto"  # a bar when stderr is a terminal, log lines otherwise
    bar = "bar"
    lines = "lines"


@dataclass
class DataOptions:
    """Where the training data lives and is augmented (no effect on what is computed, only on speed)."""

    # auto: the whole dataset as a uint8 tensor on the training device, batches augmented there, whenever the task
    # and dataset allow it (images < 128 px); true: insist (an error says why not); false: DataLoader + torchvision.
    on_device: Any = "auto"


@dataclass
class TargetOptions:
    """Steps to target (tvlars.instruments.target): the first evaluation where ``metric`` reaches ``value``."""

    metric: str | None = None  # one of the task's metrics, e.g. test_top1 or train_loss
    value: float | None = None  # higher is better for *top1/*top5, lower for losses
    stop: bool = False  # end the run (status completed) at the evaluation that reaches the target


@dataclass
class Config:
    """Top-level settings; the groups (dataset, model, task, optimizer, schedule, logger) come from YAML."""

    dataset: Any = MISSING
    model: Any = MISSING
    task: Any = MISSING
    optimizer: Any = MISSING
    schedule: Any = MISSING
    logger: Any = MISSING
    batch_size: int = 512  # GLOBAL batch size; each of the world_size processes gets batch_size / world_size
    epochs: int = 10
    seed: int = 0
    lr_scaling: LrScaling = LrScaling.none
    base_batch_size: int = 256
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Precision = Precision.fp32
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False  # CUDA: deterministic kernels, no cuDNN autotuning (bit-exact resume; slower)
    tf32: bool = True  # CUDA: TF32 tensor cores for float32 matmuls and convolutions (false: full float32)
    data: DataOptions = field(default_factory=DataOptions)
    num_workers: int = -1  # DataLoader workers per process; -1 = 1 on CPU, up to 8 on CUDA (cores allowing)
    eval_batch_size: int = 1024  # global batch for evaluation (no effect on results)
    eval_every: int = 1  # epochs; the last epoch is always evaluated
    checkpoint_every: int = 1  # epochs; 0 disables checkpoints (and resume)
    log_every: int = 50  # steps between progress updates / divergence checks (the only host syncs)
    log_trust_every: int = 100  # steps between trust-ratio snapshots (optimizers that expose trust_stats)
    progress: Progress = Progress.auto
    data_root: str = "${oc.env:TVLARS_DATA,data}"
    out_dir: str = "runs"
    run_dir: Any = None  # default: <out_dir>/<readable name>-<run id>
    name: Any = None  # readable prefix of the default run_dir
    backbone: Any = None  # backbone.pt of a pre-training run, for task=linear_eval
    labels: dict[str, Any] = field(default_factory=dict)  # free-form tags (table, row...), not part of the run id
    train_subset: int = 0  # >0: train on a fixed random subset of this many images (quick runs, tests)
    val_subset: int = 0  # >0: validate on a fixed random subset of this many images of the validation split
    test_subset: int = 0  # >0: evaluate on a fixed random subset of this many images
    # BatchNorm statistics recomputed over this many training images before every evaluation (precise BN,
    # tvlars.evaluation); 0 = evaluate with the running statistics as they are
    precise_bn_images: int = 4096
    # Instruments (tvlars.instruments, docs/instruments.md); 0 = off
    target: TargetOptions = field(default_factory=TargetOptions)
    eval_every_steps: int = 0  # also evaluate every N optimizer steps, into evals.jsonl
    log_noise_scale_every: int = 0  # gradient noise scale B_simple every N steps, into noise_scale.jsonl
    log_sharpness_every: int = 0  # top Hessian eigenvalue on a fixed batch every N steps, into sharpness.jsonl
    sharpness_iters: int = 20  # power iterations (Hessian-vector products) per sharpness measurement
    sharpness_batch: int = 0  # >0: measure on the first N samples of the fixed batch (per process); 0: all of it
    # also the top eigenvalue of P^1/2 H P^1/2, P the optimizer's diagonal preconditioner (tvlars.optim.stability)
    sharpness_preconditioned: bool = False


ConfigStore.instance().store(name="tvlars_schema", node=Config)

# Keys that do not change what is computed: they are left out of the run identity (the run id).
# `data` (sampler or device path) and `num_workers` change only how augmentations are drawn, not their distribution.
# `deterministic` and `tf32` change floating-point noise on CUDA, not the experiment.
_NON_SEMANTIC = {"logger", "out_dir", "run_dir", "name", "progress", "data_root", "data", "num_workers",
                 "log_every", "checkpoint_every", "eval_batch_size", "labels", "deterministic", "tf32"}
_NON_SEMANTIC_DATASET = {"root", "download", "verify_checksums"}
DATASET_KEYS = ("augment", "val_size")  # dataset keys the builder applies; the rest go to the loader
_NON_SEMANTIC_OPTIMIZER = {"fused"}  # the compiled step equals the eager one up to floating-point noise
# Keys added after run records existed, with the value that does what the code did before them: at that value a
# key is left out of the run id, so earlier runs keep their ids (a sweep still finds them). Adding a config key
# that changes results? Add it here with its behaviour-preserving value (docs/running.md#run-identity).
ID_NEUTRAL: dict[str, Any] = {"dataset.val_size": 0, "val_subset": 0, "precise_bn_images": 0,
                               "sharpness_preconditioned": False}


def _positive(cfg: DictConfig, key: str, minimum: int = 1) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None or value < minimum:
        raise UserError(f"{key} must be >= {minimum} (got {value}); pass e.g. {key}={max(minimum, 1)}")


def check_target(node: DictConfig, key: str, provided: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> None:
    """Check that ``node._target_`` imports and accepts every key of ``node`` except ``skip``.

    ``provided`` names arguments the loop passes itself; they are left out of the hint.
    """
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise UserError(f"{key} must be a config node with a _target_ (got {node!r})")
    try:
        target = get_object(node._target_)
    except Exception as exc:  # noqa: BLE001 - any import failure is a config error here
        raise UserError(f"{key}._target_={node._target_!r} cannot be imported ({exc})") from None
    params = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in node if not k.startswith("_") and k not in params and k not in skip]
    if unknown:
        allowed = sorted(k for k in params if k not in provided and k not in ("self", "params"))
        raise UserError(f"{key}.{unknown[0]} is not an option of {node._target_} (options: {', '.join(allowed)})")


def instantiate_node(node: DictConfig, key: str, skip: tuple[str, ...] = (), **offered: Any) -> Any:
    """``instantiate(node)`` minus ``skip`` keys, passing each ``offered`` kwarg only if the target takes it.

    Offered values are facts the loop knows (``num_classes``, ``steps_per_epoch``...); a ``ValueError`` or
    ``TypeError`` from the constructor becomes a :class:`UserError` naming ``key``.
    """
    params = inspect.signature(get_object(node._target_)).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
    resolved = OmegaConf.to_container(node, resolve=True)
    assert isinstance(resolved, dict)
    body = {k: v for k, v in resolved.items() if k not in skip}
    try:
        return instantiate(body, **kwargs, _convert_="all")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - Hydra wraps constructor errors in InstantiationException
        cause = exc.__cause__ or exc
        if isinstance(cause, UserError):
            raise cause from None
        message = str(cause)
        raise UserError(message if message.startswith(f"{key}.") else f"{key}: {message}") from None


def _check_finite(node: Any, key: str = "") -> None:
    """Every number in the config is finite: ``nan`` or ``inf`` would train silently (noise, LR, decay...)."""
    if isinstance(node, dict):
        for name, value in node.items():
            _check_finite(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, f"{key}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise UserError(f"{key} must be a finite number (got {node})")


def validate(cfg: DictConfig, world_size: int = 1) -> None:
    """Cross-field checks, each failing with one line that names the key and the fix."""
    _check_finite(OmegaConf.to_container(cfg, resolve=True))
    for key in ("batch_size", "epochs", "base_batch_size", "eval_batch_size", "eval_every", "log_every",
                "log_trust_every"):
        _positive(cfg, key)
    for key in ("checkpoint_every", "train_subset", "val_subset", "test_subset", "precise_bn_images",
                "eval_every_steps", "log_noise_scale_every", "log_sharpness_every", "sharpness_batch"):
        _positive(cfg, key, minimum=0)
    _positive(cfg, "sharpness_iters")
    if cfg.sharpness_preconditioned and not cfg.log_sharpness_every:
        raise UserError("sharpness_preconditioned=true measures with the sharpness, which is off; set "
                        "log_sharpness_every > 0 (e.g. log_sharpness_every=100) or sharpness_preconditioned=false")
    if cfg.log_noise_scale_every and world_size == 1 and cfg.batch_size % 2:
        raise UserError(f"log_noise_scale_every compares the two halves of the batch, so batch_size must be even "
                        f"(got {cfg.batch_size}); choose an even batch_size or set log_noise_scale_every=0")
    if cfg.batch_size % world_size:
        raise UserError(
            f"batch_size={cfg.batch_size} is not divisible by the world size {world_size}; "
            f"choose a multiple of {world_size} (per-process batch = batch_size / world_size)")
    if cfg.eval_batch_size % world_size:
        raise UserError(f"eval_batch_size={cfg.eval_batch_size} is not divisible by the world size {world_size}")
    if not (isinstance(cfg.data.on_device, bool) or cfg.data.on_device == "auto"):
        raise UserError(f"data.on_device must be auto, true or false (got {cfg.data.on_device!r})")
    for key, example in (("lr", 0.1), ("weight_decay", 5e-4)):
        value = cfg.optimizer.get(key, 0.0)
        if not _is_number(value):
            raise UserError(f"optimizer.{key} must be a number (got {value!r}); pass e.g. optimizer.{key}={example}")
        if value < 0:
            raise UserError(f"optimizer.{key} must be >= 0 (got {value}); pass e.g. optimizer.{key}={example}")
    if not isinstance(val_size(cfg), int) or val_size(cfg) < 0:
        raise UserError(f"dataset.val_size must be an integer >= 0 (got {val_size(cfg)!r}); pass e.g. "
                        "dataset.val_size=5000 (0: no validation split)")
    if cfg.val_subset and not val_size(cfg):
        raise UserError(f"val_subset={cfg.val_subset} needs a validation split; set dataset.val_size > 0 or "
                        "val_subset=0")
    check_target(cfg.dataset, "dataset", skip=DATASET_KEYS)
    check_target(cfg.model, "model", provided=("num_classes", "in_channels", "image_size"))
    check_target(cfg.task, "task", provided=("device",))
    check_target(cfg.optimizer, "optimizer", provided=("steps_per_epoch", "total_steps"))
    check_target(cfg.schedule, "schedule", provided=("base_lr", "steps_per_epoch", "total_steps"))
    check_target(cfg.logger, "logger", provided=("run_dir",))
    required = getattr(get_object(cfg.task._target_), "required_model", None)
    if required is not None and cfg.model._target_ != required:
        raise UserError(f"task={cfg.task._target_.rsplit('.', 1)[-1]} evaluates the architecture saved with the "
                        f"backbone, so model={cfg.model._target_} does not apply; drop the model= and model.* "
                        "overrides")
    _check_steps_target(cfg)
    if cfg.compile and getattr(get_object(cfg.optimizer._target_), "needs_closure", False):
        raise UserError(f"compile=true cannot be used with optimizer {cfg.optimizer._target_}: it differentiates "
                        "through the loss twice, which torch.compile does not support; set compile=false")
    check_hyperparameters(cfg)


def _check_steps_target(cfg: DictConfig) -> None:
    """``target.metric`` is one the task reports and comes with ``target.value``; neither is set alone; with a
    validation split the evaluations during training measure validation, so the target is on validation."""
    target = cfg.target
    if target.metric is None:
        if target.value is not None or target.stop:
            raise UserError("target.value and target.stop need target.metric; pass e.g. target.metric=test_top1")
        return
    reported = evaluated_metrics(get_object(cfg.task._target_), bool(val_size(cfg)))
    if target.metric.startswith("test_") and val_size(cfg):
        raise UserError(f"target.metric={target.metric}: with a validation split (dataset.val_size="
                        f"{val_size(cfg)}) the test set is evaluated once, at the end; put the target on "
                        f"validation (target.metric={target.metric.replace('test_', 'val_', 1)}) or set "
                        "dataset.val_size=0")
    if target.metric not in reported:
        raise UserError(f"target.metric={target.metric} is not a metric of task {cfg.task._target_} "
                        f"(choose one of: {', '.join(reported)})")
    if target.value is None:
        raise UserError(f"target.metric={target.metric} needs target.value; pass e.g. target.value=90")


def val_size(cfg: DictConfig) -> Any:
    """Images of the validation split held out of the training set (``dataset.val_size``; absent = 0)."""
    return cfg.dataset.get("val_size", 0)


def evaluated_metrics(task: type, validation: bool) -> tuple[str, ...]:
    """The metrics a run of ``task`` reports: its :attr:`~tvlars.tasks.Task.metrics`, plus ``val_<key>`` for every
    ``test_<key>`` when the dataset has a validation split."""
    metrics = tuple(getattr(task, "metrics", ()))
    if not validation:
        return metrics
    return metrics + tuple(m.replace("test_", "val_", 1) for m in metrics if m.startswith("test_"))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_ANY_STEPS_PER_EPOCH = 1000  # for checks at composition, before the data (and its steps per epoch) is known
# Ranges that torch.optim does not check itself (torch accepts SGD momentum 1.5, which diverges).
_FRACTIONS = ("momentum", "dampening")


def check_hyperparameters(cfg: DictConfig) -> None:
    """Build the optimizer on a dummy parameter and the schedule for one step, so their own checks (ranges,
    types) run at composition time, torch's SGD/AdamW included; a failure names the key."""
    for key in _FRACTIONS:
        value = cfg.optimizer.get(key)
        if value is not None and not (_is_number(value) and 0 <= value < 1):
            raise UserError(f"optimizer.{key} must be in [0, 1) (got {value!r})")
    betas = cfg.optimizer.get("betas")
    if betas is not None and not (len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise UserError(f"optimizer.betas must be two numbers in [0, 1) (got {list(betas)!r})")
    dummy = torch.nn.Parameter(torch.zeros(2, 2))
    groups = [{"params": [dummy], "weight_decay": float(cfg.optimizer.get("weight_decay", 0.0)), "adapt": True}]
    lr = resolved_lr(cfg)
    # the real steps per epoch are known once the data is loaded (the builder checks lengths in steps then)
    steps = {"steps_per_epoch": _ANY_STEPS_PER_EPOCH, "total_steps": _ANY_STEPS_PER_EPOCH * cfg.epochs}
    instantiate_node(cfg.optimizer, "optimizer", params=groups, lr=lr, **steps)
    instantiate_node(cfg.schedule, "schedule", base_lr=lr, **steps)


def resolved_lr(cfg: DictConfig) -> float:
    """``optimizer.lr`` scaled by ``lr_scaling`` with respect to ``base_batch_size``."""
    ratio = cfg.batch_size / cfg.base_batch_size
    factor = {"none": 1.0, "linear": ratio, "sqrt": ratio**0.5}[LrScaling(cfg.lr_scaling).value]
    return float(cfg.optimizer.lr) * factor


def semantic_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without keys that do not change results (paths, logging, run naming)."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(container, dict)
    out = {k: v for k, v in container.items() if k not in _NON_SEMANTIC and k != "hydra"}
    out["dataset"] = {k: v for k, v in out["dataset"].items() if k not in _NON_SEMANTIC_DATASET}
    out["optimizer"] = {k: v for k, v in out["optimizer"].items() if k not in _NON_SEMANTIC_OPTIMIZER}
    return out


def run_id(cfg: DictConfig) -> str:
    """A short stable hash of :func:`semantic_config` without the :data:`ID_NEUTRAL` keys at their neutral value:
    equal ids ⇔ the same experiment."""
    config = semantic_config(cfg)
    for dotted, neutral in ID_NEUTRAL.items():
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and leaf in node and node[leaf] == neutral:
            del node[leaf]
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def compose(overrides: list[str]) -> DictConfig:
    """``config.yaml`` with ``overrides``, as the entry point composes it (inside a running Hydra app, with its
    search path; otherwise from :data:`tvlars.paths.CONFIG_DIR`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def group_choices() -> dict[str, str]:
    """The config-group options chosen on the command line (empty when composed without @hydra.main)."""
    try:
        choices = HydraConfig.get().runtime.choices
    except ValueError:
        return {}
    return {k: v for k, v in choices.items() if not k.startswith("hydra") and v is not None}


def default_run_dir(cfg: DictConfig, rid: str) -> Path:
    """``<out_dir>/<name or the group choices>-b<batch>-s<seed>-<run id>``."""
    choices = group_choices()
    groups = ("task", "dataset", "model", "optimizer", "schedule")
    parts = [cfg.name] if cfg.name else [choices[g] for g in groups if g in choices] or ["run"]
    return Path(cfg.out_dir) / "-".join([*parts, f"b{cfg.batch_size}", f"s{cfg.seed}", rid])


def run_dir(cfg: DictConfig) -> Path:
    """The run directory: ``run_dir`` if set, else :func:`default_run_dir`."""
    return Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg, run_id(cfg))
