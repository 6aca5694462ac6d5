"""A run's learning-rate schedule in words, from its record, for the tables' "LR schedule" column.

The run's ``config.schedule`` node is instantiated as :func:`tvlars.build.build` did (base LR = the summary's
resolved ``lr``, its ``steps_per_epoch``, total steps = ``epochs`` × steps per epoch) and described by its
``describe()``; an optimizer class that scales the LR itself says how in a class attribute ``lr_factor``
(e.g. TVLARS's φ(t) on the trust ratio), which is appended.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from hydra.utils import get_object
from omegaconf import OmegaConf

from tvlars.config import instantiate_node
from tvlars.errors import UserError

# what a record this build cannot describe raises (no node, no steps, a target or key that no longer exists)
_UNREADABLE = (UserError, ImportError, KeyError, TypeError, ValueError, AttributeError)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the run-time warnings a schedule logs while it is built (e.g. a short warm-up): the table states
    the schedule's steps itself."""
    logger = logging.getLogger("tvlars")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def _lr_factor(optimizer: Any) -> str | None:
    """The ``lr_factor`` class attribute of the optimizer's ``_target_`` (the class of a factory classmethod too)."""
    try:
        target = get_object(str(optimizer["_target_"]))
    except _UNREADABLE:
        return None
    return getattr(getattr(target, "__self__", target), "lr_factor", None)


def describe_schedule(config: Mapping[str, Any], lr: float, steps_per_epoch: float) -> str:
    """The schedule of one run in words (``linear warm-up 48 steps + cosine to 0.001×``, ``constant, φ(t) on the
    trust ratio``), or ``""`` when its record does not say (no schedule node, steps or epochs; an unknown target)."""
    try:
        steps = int(steps_per_epoch)
        node = OmegaConf.create(dict(config["schedule"]))
        with _quiet():
            schedule = instantiate_node(node, "schedule", base_lr=float(lr), steps_per_epoch=steps,
                                        total_steps=int(config["epochs"]) * steps)
    except _UNREADABLE:
        return ""
    factor = _lr_factor(config.get("optimizer") or {})
    return f"{schedule.describe()}, {factor}" if factor else schedule.describe()

