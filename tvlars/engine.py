"""The training loop: epochs and steps, precision, closures, divergence, evaluation, checkpoints, progress.

The engine owns the global step. Schedules are pure functions of it, and every epoch's randomness is
re-seeded from ``(seed, rank, epoch)``, so a run resumed from a checkpoint repeats an uninterrupted run
exactly. Host synchronisation happens only every ``log_every`` steps, at epoch ends and at the steps where an
instrument (:mod:`tvlars.instruments`: evaluations every N steps, noise scale, sharpness) measures. At the first two,
the loop also checks whether a signal asked the run to stop (:mod:`tvlars.preemption`): it then checkpoints, in the
middle of an epoch if need be (:class:`EpochProgress`), and raises :class:`~tvlars.preemption.Stopped`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tvlars import distributed, preemption
from tvlars.data.loaders import DeviceLoader
from tvlars.distributed import DistInfo
from tvlars.evaluation import recalibrated, tracked_batchnorms
from tvlars.loggers import NullLogger
from tvlars.records import RunRecords, Status
from tvlars.schedules import Schedule
from tvlars.tasks import Sums, Task
from tvlars.tasks.base import add_sums, reduce_means

log = logging.getLogger("tvlars")


def seed_all(seed: int, rank: int = 0, epoch: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices) from ``(seed, rank, epoch)``."""
    value = (seed * 1_000_003 + rank * 10_007 + epoch) % 2**63
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


def random_states(device: torch.device) -> dict[str, Any]:
    """Every random state the loop draws from: Python, NumPy, torch on the CPU and on ``device``."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_random_states(states: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`random_states` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states["cuda"] is not None:
        torch.cuda.set_rng_state(states["cuda"], device)


@dataclass
class TrainState:
    """Everything besides model/optimizer/schedule state that a resumed run needs."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    wall_time_s: float = 0.0  # cumulative over resumes
    train_time_s: float = 0.0
    train_images: int = 0
    logger_id: str | None = None
    steps_to_target: int | None = None  # the first evaluation reaching target.value (tvlars.instruments.target)
    images_to_target: int | None = None
    time_to_target_s: float | None = None  # training time, evaluations and measurements excluded
    stopped_at_target: bool = False


@dataclass
class EpochTotals:
    """What the loop accumulates on the device over an epoch: any non-finite loss, and the tasks' sums."""

    nonfinite: Tensor
    sums: Sums | None = None


@dataclass
class EpochProgress:
    """How far an epoch got when a stop signal interrupted it. A checkpoint written there carries it; the resumed
    run draws the epoch's first ``steps`` batches again without training on them (their random augmentations
    repeat), then restores each rank's random states and sums, and goes on exactly as the interrupted run would."""

    steps: int  # optimizer steps of the epoch taken
    train_time_s: float  # its training time so far
    ranks: list[dict[str, Any]]  # per rank, in rank order: random states and the loop's sums (Engine._rank_state)


@dataclass
class EngineOptions:
    epochs: int
    seed: int
    run_id: str = ""  # stored in checkpoints so a resume never mixes two experiments
    precision: str = "fp32"
    channels_last: bool = False
    eval_every: int = 1
    checkpoint_every: int = 1
    log_every: int = 50
    log_trust_every: int = 100
    progress: str = "lines"  # "bar" (tqdm) or "lines" (a log line every log_every steps); rank 0 only
    name: str = ""  # the run's name, at the start of progress lines (parallel jobs share a log)
    precise_bn_images: int = 0  # BatchNorm statistics recomputed over this many training images before evaluating


def progress_mode(setting: str) -> str:
    """``bar`` or ``lines`` for a ``progress`` setting: ``auto`` draws a bar only on a terminal at least 40
    columns wide (a zero-width terminal, as some schedulers give, gets lines)."""
    if setting != "auto":
        return setting
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns if sys.stderr.isatty() else 0
    except (OSError, ValueError):  # not a real file descriptor (captured output)
        columns = 0
    return "bar" if columns >= 40 else "lines"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Training progress of rank 0: images/s, loss, LR and the run's ETA, as a tqdm bar or plain log lines.

    Values arrive every ``log_every`` steps, where the loop reads the loss anyway (no extra host sync).
    """

    def __init__(self, opts: EngineOptions, steps_per_epoch: int, images_per_step: int, enabled: bool) -> None:
        self.opts, self.steps_per_epoch, self.images_per_step = opts, steps_per_epoch, images_per_step
        self.enabled = enabled
        self.bar: Any = None
        self._mark: tuple[float, int] | None = None  # (time, step) of the last update

    def start_epoch(self, epoch: int, step: int) -> None:
        self._mark = (time.perf_counter(), step)
        if self.enabled and self.opts.progress == "bar":
            self.bar = tqdm(total=self.steps_per_epoch, desc=f"{self.opts.name} epoch {epoch + 1}/{self.opts.epochs}",
                            leave=False, file=sys.stderr, dynamic_ncols=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def update(self, epoch: int, step: int, loss: float, lr: float) -> None:
        """Report at global ``step``: speed since the last update and the ETA of the remaining training steps."""
        if not self.enabled or self._mark is None:
            return
        now = time.perf_counter()
        elapsed, steps = now - self._mark[0], step - self._mark[1]
        self._mark = (now, step)
        rate = steps / elapsed if elapsed > 0 and steps > 0 else math.nan
        remaining = self.opts.epochs * self.steps_per_epoch - step
        eta = _duration(remaining / rate) if math.isfinite(rate) and rate > 0 else "?"
        speed = f"{rate * self.images_per_step:.0f} img/s" if math.isfinite(rate) else "? img/s"
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f} | lr {lr:.4g} | {speed} | ETA {eta}", refresh=False)
            return
        within = step - epoch * self.steps_per_epoch
        log.info("%s epoch %d/%d step %d/%d | loss %.4f | lr %.4g | %s | ETA %s", self.opts.name, epoch + 1,
                 self.opts.epochs, within, self.steps_per_epoch, loss, lr, speed, eta)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class InstrumentHooks:
    """Where the engine lets measurements in (:class:`tvlars.instruments.Instruments`); this base takes none.

    ``paused_s``: seconds of the current epoch spent in measurements and evaluations, left out of its training time;
    ``measured_s``: the part of them spent in measurements (sharpness, noise scale), recorded per epoch as
    ``measure_time_s`` when ``measures``.
    """

    paused_s = measured_s = 0.0
    measures = False

    def start_epoch(self, start: float) -> None:
        """An epoch's training starts at ``time.perf_counter() == start``."""

    def before_step(self, engine: Engine, state: TrainState, batch: Any) -> None:
        """Before each optimizer step, with the batch it is about to use."""

    def after_step(self, engine: Engine, state: TrainState, sums: Sums) -> bool:
        """After each optimizer step (``state.step`` counts it); ``True`` ends the run here (a target reached)."""
        return False

    def evaluate(self, engine: Engine, state: TrainState, final: bool) -> dict[str, float]:
        """The epoch-end evaluation (``final``: the run's last one): see :meth:`Engine.evaluate`."""
        splits = engine.eval_splits(final)
        return engine.evaluate(splits) | engine.evaluate_raw(splits)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


_add = add_sums  # a name kept for scripts written against 0.1 (docs/running.md)


class Engine:
    """Runs a task's training and evaluation for a number of epochs; rank 0 writes records and logs."""

    def __init__(self, opts: EngineOptions, dist: DistInfo, *, task: Task, model: nn.Module, train_model: nn.Module,
                 optimizer: torch.optim.Optimizer, schedule: Schedule, train_loader: DataLoader | DeviceLoader,
                 eval_loaders: dict[str, DataLoader | DeviceLoader], records: RunRecords | None = None,
                 logger: NullLogger | None = None, instruments: InstrumentHooks | None = None) -> None:
        self.opts, self.dist, self.task = opts, dist, task
        self.model = model  # the bare module (checkpoints, evaluation)
        self.train_model = train_model  # possibly compiled and/or DDP-wrapped
        self.optimizer, self.schedule = optimizer, schedule
        self.train_loader, self.eval_loaders = train_loader, eval_loaders  # eval: {"val"?: ..., "test": ...}
        self.records, self.logger = records, logger or NullLogger()
        self.instruments = instruments or InstrumentHooks()
        self.device = dist.device
        self.amp = contextlib.nullcontext
        if opts.precision == "bf16":
            self.amp = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        self.needs_closure = bool(getattr(optimizer, "needs_closure", False))
        self.layer_names = [n for g in optimizer.param_groups for n in g.get("names", [""] * len(g["params"]))]
        batch = getattr(train_loader, "batch_size", None) or 0
        self.progress = Progress(opts, len(train_loader), batch * dist.world_size, enabled=dist.is_main)
        self._saved_step = 0  # the step of the last checkpoint written or resumed from
        self._resumed: EpochProgress | None = None  # a mid-epoch checkpoint's progress, until its epoch resumes
        self._epoch_start = 0.0  # time.perf_counter() at the start of the current epoch's training, less resumed time

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self, state: TrainState, progress: EpochProgress | None = None) -> dict[str, Any]:
        return {"run_id": self.opts.run_id, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "task": self.task.state_dict(), "instruments": self.instruments.state_dict(),
                "train_state": asdict(state), "epoch_progress": asdict(progress) if progress else None}

    def load_state_dict(self, ckpt: dict[str, Any]) -> TrainState:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.task.load_state_dict(ckpt.get("task", {}))
        self.instruments.load_state_dict(ckpt.get("instruments", {}))
        progress = ckpt.get("epoch_progress")
        self._resumed = EpochProgress(**progress) if progress else None
        state = TrainState(**ckpt["train_state"])
        self._saved_step = state.step
        return state

    def _save_checkpoint(self, state: TrainState, progress: EpochProgress | None = None) -> None:
        if self.dist.is_main and self.records is not None:
            self.records.save_checkpoint(self.state_dict(state, progress))
        self._saved_step = state.step

    def _rank_state(self, totals: EpochTotals) -> dict[str, Any]:
        """This rank's part of an :class:`EpochProgress`: its random states and the epoch's sums so far (host)."""
        sums = None if totals.sums is None else {k: v.cpu() if isinstance(v, Tensor) else v
                                                 for k, v in totals.sums.items()}
        return {"random": random_states(self.device), "nonfinite": totals.nonfinite.cpu(), "sums": sums}

    def _resume_epoch(self, progress: EpochProgress, batches: Any, totals: EpochTotals) -> None:
        """Draw the epoch's first ``progress.steps`` batches again (not trained on), then restore this rank's random
        states and sums. With another world size than the interrupted run's, rank 0 takes every rank's sums and the
        random states stay as the redraw left them (the data order differs anyway)."""
        for _ in range(progress.steps):
            next(batches)
        if len(progress.ranks) == self.dist.world_size:
            mine = [progress.ranks[self.dist.rank]]
            set_random_states(mine[0]["random"], self.device)
        else:
            mine = progress.ranks if self.dist.is_main else []
        for part in mine:
            totals.nonfinite |= part["nonfinite"].to(self.device)
            if part["sums"] is not None:
                totals.sums = add_sums(totals.sums, {k: v.to(self.device) if isinstance(v, Tensor) else v
                                                     for k, v in part["sums"].items()})

    def _agreed_stop(self) -> int:
        """The signal that asked any rank to stop (0: none), agreed by every rank (one all-reduce, a host sync)."""
        flag = torch.full((), float(preemption.requested() or 0), device=self.device)
        return int(distributed.all_reduce_max(flag).item())

    def _stop(self, state: TrainState, signum: int, progress: EpochProgress | None = None,
              snapshots: list[dict[str, Any]] | None = None) -> NoReturn:
        """Checkpoint (with ``progress`` and the trust ``snapshots`` not yet written, in the middle of an epoch)
        unless the last checkpoint is of this step or checkpoints are off, then raise
        :class:`~tvlars.preemption.Stopped`."""
        name = signal.Signals(signum).name
        if not self.opts.checkpoint_every:
            raise preemption.Stopped(signum, f"stopped by {name} at step {state.step}; checkpoint_every=0 keeps no "
                                             "checkpoint, so a rerun starts over")
        if state.step > self._saved_step:
            if self.dist.is_main and snapshots:
                self._write_trust(snapshots)
            self._save_checkpoint(state, progress)
        where = f"at step {state.step}, checkpointed" if state.step else "before its first step"
        raise preemption.Stopped(signum, f"stopped by {name} {where}; rerun the same command to resume from there")

    # ----------------------------------------------------------------------------------------- steps
    def _to_device(self, batch: Any) -> Any:
        """Move a (nested list/tuple of) tensor batch to the device; images go channels-last if asked."""
        if isinstance(batch, list | tuple):
            return type(batch)(self._to_device(b) for b in batch)
        batch = batch.to(self.device, non_blocking=True)
        if self.opts.channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def _train_step(self, batch: Any) -> tuple[Tensor, Sums]:
        """One optimizer step; returns the detached loss and the task's sums."""
        if not self.needs_closure:
            with self.amp():
                loss, sums = self.task.training_step(self.train_model, batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.task.after_step()
            return loss.detach(), sums

        captured: dict[str, Any] = {}

        def closure(create_graph: bool = False) -> Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            with self.amp():
                loss, sums = self.task.training_step(self.train_model, batch)
            loss.backward(create_graph=create_graph)
            captured.setdefault("first", (loss.detach(), sums))
            return loss

        self.optimizer.step(closure)
        self.task.after_step()
        return captured["first"]

    def _set_lr(self, step: int) -> float:
        lr = self.schedule.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr

    def _trust_snapshot(self, step: int, epoch: int) -> dict[str, Any] | None:
        """The optimizer's per-layer observables of the last step as a ``trust.jsonl`` row (host values: this
        is a logging step), also logged to W&B at ``step`` (so W&B receives steps in order)."""
        stats = getattr(self.optimizer, "trust_stats", None)
        values = stats() if stats is not None else {}
        if not values:
            return None
        row: dict[str, Any] = {"step": step, "epoch": epoch}
        summary: dict[str, float] = {}
        for key, value in values.items():
            host = value.detach().float().cpu()
            row[key] = host.tolist()
            if host.ndim == 0:
                summary[f"trust/{key}"] = host.item()
                continue
            finite = host[torch.isfinite(host)]
            if finite.numel():
                summary |= {f"trust/{key}_min": finite.min().item(), f"trust/{key}_median": finite.median().item(),
                            f"trust/{key}_max": finite.max().item()}
        self.logger.log(summary, step=step)
        return row

    # ----------------------------------------------------------------------------------------- epochs
    def eval_splits(self, final: bool) -> tuple[str, ...]:
        """The splits an evaluation measures: validation (when the dataset has a validation split), and test only
        at the run's ``final`` evaluation (the test set is reported once); without a validation split, test."""
        if "val" not in self.eval_loaders:
            return ("test",)
        return ("val", "test") if final else ("val",)

    def evaluate(self, splits: tuple[str, ...] | None = None) -> dict[str, float]:
        """``<split>_<key>`` metrics of ``splits`` (default: those of an evaluation during training), with
        BatchNorm statistics recomputed over ``precise_bn_images`` training images first (precise BN; the weights
        and the training state are untouched)."""
        with self.precise_bn():
            return {k: v for split in splits or self.eval_splits(final=False)
                    for k, v in self._evaluate_split(split).items()}

    def evaluate_raw(self, splits: tuple[str, ...]) -> dict[str, float]:
        """The same metrics with the running BatchNorm statistics as training left them, as ``<split>_<key>_rawbn``
        (the records show each evaluation's BatchNorm lag); empty when precise BN is off or there is no BatchNorm."""
        if not self.opts.precise_bn_images or not tracked_batchnorms(self.model):
            return {}
        return {f"{k}_rawbn": v for split in splits for k, v in self._evaluate_split(split).items()}

    def precise_bn(self) -> contextlib.AbstractContextManager[int]:
        """:func:`~tvlars.evaluation.recalibrated` over the first training batches of the current epoch's order
        (ceil(precise_bn_images / global batch) of them), with a fixed per-rank seed for their augmentations."""
        images = self.opts.precise_bn_images
        if not images:
            return contextlib.nullcontext(0)
        global_batch = self.train_loader.batch_size * self.dist.world_size
        count = min(-(-images // global_batch), len(self.train_loader))

        def forward(batch: Any) -> None:
            with self.amp():
                self.task.training_step(self.model, self._to_device(batch))

        return recalibrated(self.model, lambda: itertools.islice(self.train_loader, count), forward, self.device,
                            self.dist.world_size, seed=self.opts.seed * 1_000_003 + self.dist.rank * 10_007)

    def _evaluate_split(self, split: str) -> dict[str, float]:
        self.model.eval()
        sums: Sums | None = None
        with torch.no_grad(), self.amp():
            for batch in self.eval_loaders[split]:
                sums = add_sums(sums, self.task.eval_step(self.model, self._to_device(batch)))
        self.model.train()
        if sums is None:  # the builder refuses splits smaller than the world size; this guards direct use
            raise RuntimeError(f"evaluation on an empty {split} shard")
        return reduce_means(sums, split)

    def train_epoch(self, state: TrainState, epoch: int, resumed: EpochProgress | None = None,
                    ) -> tuple[dict[str, float], bool, list[dict[str, Any]]]:
        """Train one epoch (``resumed``: from a mid-epoch checkpoint's progress); returns (train metrics, diverged?,
        trust snapshots on device). A stop signal ends it at the next ``log_every`` step (:meth:`_stop`)."""
        opts = self.opts
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self.train_model.train()
        totals = EpochTotals(torch.zeros((), dtype=torch.bool, device=self.device))
        snapshots: list[dict[str, Any]] = []
        self.progress.start_epoch(epoch, state.step)
        diverged = False
        batches = iter(self.train_loader)
        if resumed is not None:
            self._resume_epoch(resumed, batches, totals)
        for i, batch in enumerate(batches, start=resumed.steps if resumed is not None else 0):
            loss, lr, step_sums = self.loop_step(state, batch, totals)
            if state.step % opts.log_trust_every == 0 and self.dist.is_main:
                snap = self._trust_snapshot(state.step, epoch + 1)
                if snap:
                    snapshots.append(snap)
            self.progress.step()
            stop = 0
            if state.step % opts.log_every == 0 or i + 1 == len(self.train_loader):
                if distributed.all_reduce_max(totals.nonfinite.float()).item() > 0:
                    diverged = True
                    break
                host_loss = loss.item()
                self.progress.update(epoch, state.step, host_loss, lr)
                self.logger.log({"train/loss": host_loss, "train/lr": lr}, step=state.step)
                stop = self._agreed_stop()
            if self.instruments.after_step(self, state, step_sums):
                break
            if stop:
                self.progress.end_epoch()
                train_time = time.perf_counter() - self._epoch_start - self.instruments.paused_s
                progress = EpochProgress(i + 1, train_time, distributed.all_gather_object(self._rank_state(totals)))
                self._stop(state, stop, progress, snapshots)
        self.progress.end_epoch()
        if totals.sums is None:
            raise RuntimeError("the training loader yielded no batch")
        return reduce_means(totals.sums, "train"), diverged, snapshots

    def loop_step(self, state: TrainState, batch: Any, totals: EpochTotals) -> tuple[Tensor, float, Sums]:
        """One step of the loop, all but what it does every ``log_every``/``log_trust_every`` steps: the LR, the
        instruments' pre-step measurement, forward, backward and the optimizer step, the schedule's observation and
        the epoch's totals. No host synchronisation (tested for every task and optimizer); returns the step's loss
        (a device tensor), its LR and its sums."""
        lr = self._set_lr(state.step)
        batch = self._to_device(batch)
        self.instruments.before_step(self, state, batch)
        loss, step_sums = self._train_step(batch)
        self.schedule.observe(state.step, loss)
        totals.nonfinite |= ~torch.isfinite(loss)
        totals.sums = add_sums(totals.sums, step_sums)
        state.step += 1
        return loss, lr, step_sums

    def _write_trust(self, rows: list[dict[str, Any]]) -> None:
        if not rows or self.records is None:
            return
        if not self.records.trust.exists():
            self.records.append_jsonl(self.records.trust, [{"layers": self.layer_names}])
        self.records.append_jsonl(self.records.trust, rows)

    def fit(self, state: TrainState) -> str:
        """Train from ``state`` to ``opts.epochs``; returns the final status (``completed`` or ``diverged``)."""
        opts = self.opts
        if state.stopped_at_target:  # resumed after stopping at the target (killed before summary.json was written)
            return Status.completed.value
        for epoch in range(state.epoch, opts.epochs):
            stop = self._agreed_stop()  # asked between epochs, or while the last one was evaluated
            if stop:
                self._stop(state, stop)
            seed_all(opts.seed, self.dist.rank, epoch + 1)
            resumed, self._resumed = self._resumed, None
            start = time.perf_counter() - (resumed.train_time_s if resumed is not None else 0.0)
            first_step = state.step - (resumed.steps if resumed is not None else 0)
            self._epoch_start = start
            self.instruments.start_epoch(start)
            train_metrics, diverged, snapshots = self.train_epoch(state, epoch, resumed)
            train_time = time.perf_counter() - start - self.instruments.paused_s
            if diverged:
                log.warning("non-finite training loss at step %d (epoch %d): run diverged", state.step, epoch + 1)
                return Status.diverged.value
            images = (state.step - first_step) * self.train_loader.batch_size * self.dist.world_size
            state.train_images += images
            state.train_time_s += train_time
            row: dict[str, Any] = {"epoch": epoch + 1, "step": state.step, "lr": self.schedule.lr(state.step - 1),
                                   **train_metrics, "epoch_time_s": train_time,
                                   "train_images_per_s": images / train_time}
            if self.instruments.measures:
                row["measure_time_s"] = self.instruments.measured_s
            final = state.stopped_at_target or epoch + 1 == opts.epochs
            if final or (epoch + 1) % opts.eval_every == 0:
                row |= self.instruments.evaluate(self, state, final)
            state.epoch = epoch + 1
            state.wall_time_s += time.perf_counter() - start
            self._end_epoch(state, row, snapshots)
            if not all(math.isfinite(v) for v in row.values() if isinstance(v, float)):
                log.warning("non-finite metrics after epoch %d: run diverged", epoch + 1)
                return Status.diverged.value
            if state.stopped_at_target:
                log.info("target reached at step %d: run stops (target.stop=true)", state.step)
                break
        return Status.completed.value

    def _end_epoch(self, state: TrainState, row: dict[str, Any], snapshots: list[dict[str, Any]]) -> None:
        if self.dist.is_main:
            self.logger.log({f"epoch/{k}": v for k, v in row.items()}, step=state.step)
            msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            log.info("epoch %d/%d %s", state.epoch, self.opts.epochs, msg)
            if self.records is not None:
                self._write_trust(snapshots)
                self.records.append_jsonl(self.records.metrics, [row])
        every = self.opts.checkpoint_every
        if every and (state.epoch % every == 0 or state.epoch == self.opts.epochs):
            self._save_checkpoint(state)
