"""Steps to target: evaluations every ``eval_every_steps`` optimizer steps and at every evaluated epoch end,
recorded in ``evals.jsonl``; the first one that reaches ``target.value`` on ``target.metric`` fixes
``steps_to_target``, ``images_to_target`` (steps × global batch) and ``time_to_target_s`` (Shallue et al. 2018,
"Measuring the Effects of Data Parallelism on Neural Network Training").

The results live in :class:`~tvlars.engine.TrainState`, which checkpoints carry, so a resumed run reports the same.
``time_to_target_s`` is training time only (evaluations and measurements excluded), cumulative over resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tvlars.instruments.base import publish
from tvlars.tasks import Sums
from tvlars.tasks.base import add_sums, reduce_means

if TYPE_CHECKING:
    from tvlars.engine import Engine, TrainState

HIGHER_IS_BETTER = ("top1", "top5")  # metric name endings; every other metric (losses) is better lower


@dataclass(frozen=True)
class Target:
    """``metric`` (one of the task's :attr:`~tvlars.tasks.Task.metrics`) reaching ``value``; ``stop`` ends the run
    at the evaluation that reaches it."""

    metric: str
    value: float
    stop: bool = False

    @property
    def higher_is_better(self) -> bool:
        return self.metric.endswith(HIGHER_IS_BETTER)

    def reached(self, metrics: dict[str, float]) -> bool:
        """Whether ``metrics[metric]`` is at least (accuracies) or at most (losses) ``value``; NaN never is."""
        value = metrics.get(self.metric, math.nan)
        return value >= self.value if self.higher_is_better else value <= self.value


def target_summary(state: TrainState) -> dict[str, Any]:
    """The ``summary.json`` fields of steps to target (``None`` when not reached)."""
    return {"steps_to_target": state.steps_to_target, "images_to_target": state.images_to_target,
            "time_to_target_s": state.time_to_target_s, "stopped_at_target": state.stopped_at_target}


class StepsToTarget:
    """Evaluations beside the epoch ends, into ``evals.jsonl``: ``step``, ``epoch`` (``step / steps per epoch``),
    ``images``, ``train_time_s``, the test metrics and the training metrics since the previous evaluation."""

    def __init__(self, every_steps: int, target: Target | None) -> None:
        self.every_steps, self.target = every_steps, target
        self._sums: Sums | None = None  # training sums since the previous evaluation (on the device)
        self._last: tuple[int, dict[str, float]] | None = None  # (step, test metrics) of the latest evaluation

    def accumulate(self, sums: Sums) -> None:
        """Add one step's training sums (device ops only)."""
        self._sums = add_sums(self._sums, sums)

    def due(self, step: int) -> bool:
        return bool(self.every_steps) and step % self.every_steps == 0

    def evaluate(self, engine: Engine, state: TrainState, train_time_s: float,
                 splits: tuple[str, ...] | None = None) -> dict[str, float]:
        """Evaluate ``splits`` (default: those of an evaluation during training) once per step (a second call at
        the same step evaluates only the splits the first lacked), record the step's row at its first evaluation,
        and check the target; returns the metrics."""
        splits = splits or engine.eval_splits(final=False)
        step, metrics = self._last if self._last is not None and self._last[0] == state.step else (state.step, {})
        missing = tuple(s for s in splits if not any(k.startswith(f"{s}_") for k in metrics))
        if not missing:
            return metrics
        first = not metrics
        metrics = metrics | engine.evaluate(missing)
        self._last = (step, metrics)
        if not first:
            return metrics
        trained = reduce_means(self._sums, "train") if self._sums is not None else {}
        self._sums = None
        images = state.step * engine.train_loader.batch_size * engine.dist.world_size
        row = {"step": state.step, "epoch": state.step / len(engine.train_loader), "images": images,
               "train_time_s": train_time_s, **metrics, **trained}
        publish(engine, "evals", "eval", row)
        if self.target is not None and state.steps_to_target is None and self.target.reached(row):
            state.steps_to_target, state.images_to_target, state.time_to_target_s = state.step, images, train_time_s
            state.stopped_at_target = self.target.stop
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self._sums}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        sums = state["sums"]
        self._sums = None if sums is None else {k: v.to(device, copy=True) if isinstance(v, Tensor) else v
                                                for k, v in sums.items()}
