"""One run, start to finish: validate → distributed set-up → skip or resume → build → train → follow-up → summary.

A run directory is identified by the run id (a hash of every result-affecting setting); ``summary.json`` is written
when the run starts (``running``) and when it ends (``completed``, ``diverged``, ``failed`` or ``interrupted``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from tvlars import distributed, preemption
from tvlars.build import Built, build
from tvlars.config import LrScaling, compose, instantiate_node, run_dir, run_id, validate
from tvlars.distributed import DistInfo
from tvlars.engine import TrainState
from tvlars.errors import UserError
from tvlars.instruments import target_summary
from tvlars.lock import Locked
from tvlars.loggers import NullLogger
from tvlars.paths import CONFIG_DIR
from tvlars.provenance import code_hash, environment
from tvlars.records import FINAL, RunRecords, Status
from tvlars.tasks.linear_eval import save_backbone

log = logging.getLogger("tvlars")
FOLLOW_UP_KEYS = ("best_val_top1", "best_val_epoch", "final_val_top1", "final_val_top5", "final_val_loss",
                  "best_test_top1", "best_test_top5", "best_epoch", "final_test_top1", "final_test_top5",
                  "final_test_loss")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment described by a composed config; returns its summary (rank 0) or ``{}``."""
    validate(cfg, distributed.world_size_from_env())
    dist = distributed.init(cfg.device, cfg.deterministic, cfg.tf32)
    try:
        with preemption.handling():
            return _run(cfg, dist)
    finally:
        distributed.shutdown()


def _run(cfg: DictConfig, dist: DistInfo) -> dict[str, Any]:
    rid, directory = run_id(cfg), run_dir(cfg)
    records = RunRecords(directory)
    with _sole_writer(records, dist):
        return _run_held(cfg, dist, rid, records)


def _run_held(cfg: DictConfig, dist: DistInfo, rid: str, records: RunRecords) -> dict[str, Any]:
    """:func:`_run` once rank 0 holds the run directory."""
    directory = records.dir
    previous = _previous_summary(records, rid, dist)
    if previous is not None and previous.get("status") in FINAL:
        if dist.is_main:
            log.info("run %s already %s; skipping (delete %s to rerun)", rid, previous["status"], directory)
            _warn_if_other_code(previous, "was finished", dist)
        return previous

    logger = instantiate_node(cfg.logger, "logger", run_dir=str(directory)) if dist.is_main else NullLogger()
    built = build(cfg, dist, records if dist.is_main else None, logger)
    if dist.is_main:
        records.prepare()
    state = _resume(records, built, rid, dist, previous)
    base: dict[str, Any] = {"run_id": rid, "run_dir": str(directory), "seed": cfg.seed, "lr": built.lr,
                            "steps_per_epoch": built.steps_per_epoch, "data_path": built.data_path,
                            "num_classes": built.info.num_classes,
                            "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                            **environment(dist.device, dist.world_size)}
    if dist.is_main:
        records.write_config(OmegaConf.to_yaml(cfg, resolve=True))
        _log_start(cfg, built, dist)
        logger.start(base["config"], state.logger_id or (previous or {}).get("logger_id"))
        state.logger_id = logger.run_id  # recorded now: a run stopped before its first checkpoint continues it too
        records.write_summary({**base, "status": Status.running.value, "logger_id": state.logger_id})
    status, error = Status.failed, None
    try:
        status = Status(built.engine.fit(state))
        if status is Status.completed and built.engine.task.follow_up:
            status, follow_up = _follow_up(cfg, dist, built, directory)
            base |= follow_up
    except KeyboardInterrupt:
        status, error = Status.interrupted, "interrupted; rerun the same command to resume from the last checkpoint"
        raise
    except preemption.Stopped as exc:
        status, error = Status.interrupted, str(exc)
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise
    finally:
        summary = {**base, "status": status.value, "error": error, "wall_time_s": state.wall_time_s,
                   "steps": state.step, "logger_id": state.logger_id, **target_summary(state),
                   **built.engine.schedule.summary()}
        if dist.is_main:
            summary |= records.summarize()
            records.write_summary(summary)
            logger.log({f"summary/{k}": v for k, v in summary.items() if isinstance(v, int | float)}, step=state.step)
            logger.finish(exit_code=0 if status.final else 1, preempted=status is Status.interrupted)
            log.info("%s: %s", status.value, {k: summary.get(k) for k in ("final_val_top1", "final_test_top1",
                                                                          "images_per_s", "wall_time_s")})
    return summary if dist.is_main else {}


@contextlib.contextmanager
def _sole_writer(records: RunRecords, dist: DistInfo) -> Iterator[None]:
    """Rank 0 holds the run directory's lock (:mod:`tvlars.lock`) for the whole run; no rank goes on if it could
    not take it."""
    with contextlib.ExitStack() as held:
        error = None
        if dist.is_main:
            try:
                held.enter_context(records.locked())
            except UserError as exc:
                error = exc
        refused = distributed.all_reduce_max(torch.tensor(float(error is not None), device=dist.device)).item() > 0
        if error is not None:
            raise error
        if refused:
            raise Locked(f"rank 0 could not take the lock of run directory {records.dir} (its error line says why)")
        yield


def _recorded_run_id(records: RunRecords) -> str | None:
    """The run id of the records in a directory without a readable ``summary.json``: that of its ``config.yaml``,
    else its checkpoint's; ``None`` when neither tells."""
    try:
        config = OmegaConf.create(yaml.safe_load(records.config.read_bytes()))
        if isinstance(config, DictConfig):
            return run_id(config)
    except Exception:  # noqa: BLE001 - a missing or damaged config.yaml says nothing; the checkpoint may
        pass
    checkpoint = records.load_checkpoint()
    return checkpoint.get("run_id") if checkpoint is not None else None


def _previous_summary(records: RunRecords, rid: str, dist: DistInfo) -> dict[str, Any] | None:
    """The summary already in the run directory, checked: another experiment's directory is refused (known by its
    ``summary.json``, or, without a readable one, by its ``config.yaml`` or checkpoint); one whose ``summary.json``
    cannot be read and that has no checkpoint to resume from is moved aside (never deleted)."""
    previous = records.read_summary()
    recorded = previous.get("run_id") if previous is not None else _recorded_run_id(records)
    if (previous is not None or recorded is not None) and recorded != rid:
        raise UserError(f"{records.dir} holds a different run (run id {recorded} != {rid}); "
                        "choose another run_dir or delete that directory")
    if records.unreadable_summary() and not records.checkpoint.exists():
        if dist.is_main:
            records.move_aside()
        distributed.barrier()
    return previous


def _warn_if_other_code(previous: dict[str, Any], what: str, dist: DistInfo) -> None:
    """One warning line when a finished or resumed run came from other code or another world size."""
    if previous.get("code_hash") not in (None, code_hash()):
        log.warning("warning: this run %s by different code (tvlars code hash %s, now %s, commit %s): its records "
                    "are kept; delete %s to rerun it with this code", what, previous["code_hash"], code_hash(),
                    previous.get("git_commit"), previous.get("run_dir"))
    if previous.get("world_size") not in (None, dist.world_size):
        log.warning("warning: this run %s with %s process(es), this one has %d: the global batch is the same, but "
                    "the data order and per-process statistics differ", what, previous["world_size"],
                    dist.world_size)


def _resume(records: RunRecords, built: Built, rid: str, dist: DistInfo,
            previous: dict[str, Any] | None) -> TrainState:
    """The training state to start from: the checkpoint's (logs cut back to it), or a fresh one."""
    checkpoint = records.load_checkpoint() if built.engine.opts.checkpoint_every else None
    if checkpoint is None:
        if dist.is_main:
            records.truncate_after(epoch=0, step=0)
        return TrainState()
    if checkpoint.get("run_id") != rid:
        raise UserError(f"checkpoint {records.checkpoint} belongs to run {checkpoint.get('run_id')}, not {rid}; "
                        "delete it or choose another run_dir")
    state = built.engine.load_state_dict(checkpoint)
    if dist.is_main:
        records.truncate_after(epoch=state.epoch, step=state.step)
        log.info("resuming %s from step %d (%d epoch(s) done)", records.dir, state.step, state.epoch)
        if previous is not None:
            _warn_if_other_code(previous, "was started", dist)
    return state


def _log_start(cfg: DictConfig, built: Built, dist: DistInfo) -> None:
    groups = ", ".join(f"{len(g['params'])} tensors (wd={g['weight_decay']}, adapt={g.get('adapt', True)})"
                       for g in built.engine.optimizer.param_groups)
    log.info("run %s: %s | lr %.5g (%s scaling) | global batch %d = %d x %d | %d steps/epoch | %s data path "
             "| groups: %s", built.run_id, run_dir(cfg), built.lr, LrScaling(cfg.lr_scaling).value, cfg.batch_size,
             dist.world_size, cfg.batch_size // dist.world_size, built.steps_per_epoch, built.data_path, groups)


# ---------------------------------------------------------------------------------------------- follow-up
def _warn_if_at_chance(result: dict[str, Any], classes: int, what: str) -> None:
    """One warning line when an evaluation ends with an absurd training loss or at chance level (a broken
    pre-training would otherwise end 'completed' without a word)."""
    loss, top1 = result.get("final_train_loss"), result.get("final_test_top1")
    chance = 100.0 / classes
    if loss is not None and not (math.isfinite(loss) and loss < 10 * math.log(classes)):
        log.warning("warning: the %s ended at training loss %.3g (%.2f at chance): its accuracy means little",
                    what, loss, math.log(classes))
    elif top1 is not None and top1 < chance + 2.0:
        log.warning("warning: the %s ended at %.2f %% test top-1, chance level (%.2f %%)", what, top1, chance)


def option_keys(group: str, option: str) -> set[str]:
    """The top-level keys that choosing ``group=option`` sets: the option itself, or, for a ``@package _global_``
    option, every key of its body and every group its defaults list overrides."""
    path = Path(CONFIG_DIR) / group / f"{option}.yaml"
    text = path.read_text()
    if "@package _global_" not in text.split("\n", 3)[0]:
        return {group}
    body = yaml.safe_load(text) or {}
    overridden = {key.split("/")[-1] for entry in body.get("defaults", []) if isinstance(entry, dict)
                  for key in entry if key.startswith("override /")}
    return (set(body) - {"defaults"}) | overridden


def follow_up_config(cfg: DictConfig, option: str, parent_dir: Path, settings: dict[str, Any],
                     parent_id: str) -> DictConfig:
    """The run that evaluates a finished run's exported module (SSL pre-training → ``task=linear_eval``): the
    parent's config, with every key that ``task=<option>`` sets taken from that option (each setting lives once,
    in ``configs/task/<option>.yaml``), then ``settings`` (the parent task's overrides, e.g. ``epochs``); it runs
    in ``<parent_dir>/<option>`` without a logger of its own and is labelled as the parent's follow-up (tables
    read its numbers from the parent's summary)."""
    composed = compose([f"task={option}"])
    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    for key in option_keys("task", option):
        sub[key] = OmegaConf.to_container(composed[key], resolve=False) if OmegaConf.is_config(composed[key]) \
            else composed[key]
    for key, value in settings.items():
        sub[key] = value
    sub.backbone = str(parent_dir / "backbone.pt")
    sub.run_dir = str(parent_dir / option)
    sub.logger = {"_target_": "tvlars.loggers.NullLogger"}
    sub.labels = {"follow_up_of": parent_id}
    sub.eval_batch_size = max(sub.eval_batch_size, sub.batch_size)
    sub.compile, sub.channels_last = False, False  # a linear head on feature vectors
    sub.target = {"metric": None, "value": None, "stop": False}  # the instruments measure the parent run only
    sub.eval_every_steps = sub.log_noise_scale_every = sub.log_sharpness_every = 0
    sub.sharpness_preconditioned = False
    return sub


def _follow_up(cfg: DictConfig, dist: DistInfo, built: Built, directory: Path) -> tuple[Status, dict[str, Any]]:
    """Save the exported module, run the task's follow-up, return its status and test metrics."""
    engine = built.engine
    task = engine.task
    assert task.follow_up is not None
    if dist.is_main:
        info = built.info
        save_backbone(directory / "backbone.pt", task.exported_module(engine.model),
                      OmegaConf.to_container(cfg.model, resolve=True),
                      {"num_classes": info.num_classes, "in_channels": info.in_channels, "image_size": info.image_size})
    distributed.barrier()
    sub = follow_up_config(cfg, task.follow_up, directory, task.follow_up_settings(), built.run_id)
    validate(sub, dist.world_size)
    result = _run(sub, dist)
    _warn_if_at_chance(result, built.info.num_classes, task.follow_up)
    out = {k: result[k] for k in FOLLOW_UP_KEYS if k in result}
    out[task.follow_up] = {"run_dir": str(directory / task.follow_up), "status": result.get("status"),
                           "epochs": result.get("epochs_completed")}
    return Status(result.get("status", Status.completed.value)), out
