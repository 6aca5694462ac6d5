"""The instruments of one run, built from its config and called by the engine at its hooks.

Every measurement leaves training as it would have been without it: it runs on the bare module
(``engine.model``, not the DDP or compiled wrapper), takes gradients with ``torch.autograd.grad`` (``.grad`` is
untouched), and restores BatchNorm buffers and every random state afterwards
(:func:`~tvlars.instruments.base.untouched`). A step where nothing is due costs a few integer tests and, when
evaluations are on, one device add of the step's sums: no host synchronisation. A step where something is due
synchronises, and the time it takes is left out of the epoch's training time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from tvlars import distributed
from tvlars.engine import Engine, InstrumentHooks, TrainState
from tvlars.errors import UserError
from tvlars.evaluation import untouched
from tvlars.instruments.noise_scale import NoiseScale
from tvlars.instruments.sharpness import Sharpness
from tvlars.instruments.target import StepsToTarget, Target
from tvlars.tasks import Sums


class Instruments(InstrumentHooks):
    """Evaluations every N steps and steps to target (``evals``), the gradient noise scale and the sharpness.

    Rows carry the optimizer step they belong to (1-based), so that a resume cuts every log back to its checkpoint
    by step. The noise scale of step ``s`` (a multiple of its period) is measured before that step's update, on its
    batch (a batch the parameters have not seen yet); the sharpness and the evaluations of step ``s`` after the
    update, when ``s`` is a multiple of their period.
    """

    def __init__(self, evals: StepsToTarget | None = None, noise_scale: NoiseScale | None = None,
                 sharpness: Sharpness | None = None, device: torch.device | None = None) -> None:
        self.evals, self.noise_scale, self.sharpness = evals, noise_scale, sharpness
        self.device = device or torch.device("cpu")  # where checkpointed state goes back to
        self.paused_s = self.measured_s = 0.0
        self._epoch_start = 0.0

    @classmethod
    def from_config(cls, cfg: DictConfig, model: nn.Module, world_size: int = 1) -> Instruments:
        """The instruments ``cfg`` asks for (validated by :func:`tvlars.config.validate`) on ``model``, trained by
        ``world_size`` processes."""
        target = Target(cfg.target.metric, float(cfg.target.value), bool(cfg.target.stop)) \
            if cfg.target.metric is not None else None
        evals = StepsToTarget(cfg.eval_every_steps, target) if cfg.eval_every_steps or target else None
        noise = NoiseScale(cfg.log_noise_scale_every) if cfg.log_noise_scale_every else None
        sharpness = Sharpness(cfg.log_sharpness_every, cfg.sharpness_iters, cfg.seed, cfg.sharpness_batch,
                              cfg.sharpness_preconditioned) if cfg.log_sharpness_every else None
        # SyncBatchNorm synchronises (and has no double backward) only with more than one process; with one it
        # runs plain batch norm
        if sharpness and world_size > 1 and any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
            raise UserError("log_sharpness_every needs double backward, which SyncBatchNorm (multi-GPU runs) does not "
                            "have; measure sharpness on one GPU or set log_sharpness_every=0")
        return cls(evals, noise, sharpness, next(model.parameters()).device)

    @property
    def measures(self) -> bool:
        """Whether a measurement (noise scale, sharpness) is on: its time is then recorded per epoch."""
        return self.noise_scale is not None or self.sharpness is not None

    @contextlib.contextmanager
    def _paused(self, engine: Engine, measurement: bool = True) -> Iterator[float]:
        """Leave the block out of training time (yields its start) and out of training (:func:`untouched`); a
        ``measurement`` (not an evaluation) also counts in ``measured_s``."""
        distributed.synchronize(engine.device)  # queued training work counts as training
        start = time.perf_counter()
        try:
            with untouched(engine.model, engine.device):
                yield start
        finally:
            spent = time.perf_counter() - start
            self.paused_s += spent
            self.measured_s += spent if measurement else 0.0

    # ------------------------------------------------------------------------------------------ engine hooks
    def start_epoch(self, start: float) -> None:
        self._epoch_start, self.paused_s, self.measured_s = start, 0.0, 0.0

    def before_step(self, engine: Engine, state: TrainState, batch: Any) -> None:
        step = state.step + 1
        if self.noise_scale is not None and step % self.noise_scale.every == 0:
            with self._paused(engine):
                self.noise_scale.record(engine, step, batch)

    def after_step(self, engine: Engine, state: TrainState, sums: Sums) -> bool:
        if self.evals is not None:
            self.evals.accumulate(sums)
        sharpness = self.sharpness is not None and state.step % self.sharpness.every == 0
        evaluation = self.evals is not None and self.evals.due(state.step)
        if not (sharpness or evaluation):
            return False
        if sharpness:
            with self._paused(engine):
                self.sharpness.record(engine, state.step)
        if evaluation:
            with self._paused(engine, measurement=False) as start:
                self.evals.evaluate(engine, state, state.train_time_s + start - self._epoch_start - self.paused_s)
        return state.stopped_at_target

    def evaluate(self, engine: Engine, state: TrainState, final: bool) -> dict[str, float]:
        if self.evals is None:
            return super().evaluate(engine, state, final)
        splits = engine.eval_splits(final)
        return self.evals.evaluate(engine, state, state.train_time_s, splits) | engine.evaluate_raw(splits)

    def _parts(self) -> dict[str, StepsToTarget | NoiseScale | Sharpness]:
        parts = {"evals": self.evals, "noise_scale": self.noise_scale, "sharpness": self.sharpness}
        return {name: part for name, part in parts.items() if part is not None}

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self._parts().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self._parts().items():
            if name in state:
                part.load_state_dict(state[name], self.device)
