"""The task interface: what one training step and one evaluation step compute. The engine does the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from tvlars import distributed
from tvlars.data import DataBundle, DatasetInfo

Sums = dict[str, Tensor | int]
"""Per-batch sums of statistics: 0-d device tensors, plus ``count``, the number of samples, as a Python int (the
batch size is known on the host: counting costs no device work and no host sync). The engine adds them up over an
epoch and across processes and reports ``sum / count`` for every other key."""


BatchTransforms = tuple[Callable[[Tensor], Any] | None, Callable[[Tensor], Any] | None]
"""(train, test) batched transforms of the device path; ``None`` = identity."""


def add_sums(total: Sums | None, new: Sums) -> Sums:
    """``total + new`` key by key, in place (a detached copy of ``new`` when ``total`` is ``None``)."""
    if total is None:
        return {k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in new.items()}
    for k, v in new.items():
        total[k] += v.detach() if isinstance(v, Tensor) else v
    return total


def reduce_means(sums: Sums, prefix: str) -> dict[str, float]:
    """All-reduce epoch sums and return ``{prefix_key: sum_key / count}`` as Python floats (one sync)."""
    keys = sorted(sums)
    device = next(v.device for v in sums.values() if isinstance(v, Tensor))
    packed = torch.stack([torch.as_tensor(sums[k], device=device).float() for k in keys])
    values = dict(zip(keys, distributed.all_reduce_sum(packed).tolist(), strict=True))
    count = max(values.pop("count"), 1.0)
    return {f"{prefix}_{k}": v / count for k, v in values.items()}


class Task:
    """A task never knows which optimizer or schedule it runs with.

    A task whose trained module is meant to be evaluated by another run declares it: ``follow_up`` names the
    ``configs/task`` option that runs after it completes (SSL pre-training → ``linear_eval``) on the module that
    :meth:`exported_module` returns, saved as ``<run_dir>/backbone.pt``.
    """

    views: int = 1  # images of a sample the model processes per step (two-view SSL: 2); for cost estimates
    required_model: str | None = None  # the model ``_target_`` this task insists on (checked at composition)
    follow_up: str | None = None  # the configs/task option that evaluates this task's exported module
    metrics: tuple[str, ...] = ()
    """The metrics this task reports (``train_<key>`` from its training sums, ``test_<key>`` from its evaluation
    sums): the keys of ``metrics.jsonl`` rows besides the loop's own, and the choices of ``target.metric``."""

    def prepare(self, data: DataBundle, backbone: nn.Module) -> DataBundle:
        """The data this task trains on (e.g. features of a frozen ``backbone`` instead of images); by default
        ``data`` itself. Called after :meth:`build_model`."""
        return data

    def datasets(self, data: DataBundle, augment: dict[str, Any]) -> tuple[Dataset, Dataset]:
        """Sampler path: the (train, test) datasets with this task's per-sample transforms attached."""
        raise NotImplementedError

    def batch_transforms(self, info: DatasetInfo, augment: dict[str, Any]) -> BatchTransforms | None:
        """Device path: the same transforms as :meth:`datasets`, batched (``uint8`` image batch on the device →
        model input; ``None`` = identity); ``None`` if this task has none. A ``ValueError`` says why they do not
        apply to this data."""
        return None

    def build_model(self, backbone: nn.Module, info: DatasetInfo) -> nn.Module:
        """The module that is trained (e.g. backbone plus heads); classification trains the backbone itself."""
        return backbone

    def optimized_module(self, model: nn.Module) -> nn.Module:
        """The part of ``model`` the optimizer under test trains (auxiliary monitors may train themselves)."""
        return model

    def exported_module(self, model: nn.Module) -> nn.Module:
        """The module the :attr:`follow_up` run evaluates (only called when ``follow_up`` is set)."""
        raise NotImplementedError

    def follow_up_settings(self) -> dict[str, Any]:
        """Top-level config values for the :attr:`follow_up` run that differ from its option's YAML."""
        return {}

    def training_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, Sums]:
        """The loss to minimise and the sums to report, without host synchronisation."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after every optimizer step (e.g. to step a monitor's own optimizer)."""

    def eval_step(self, model: nn.Module, batch: Any) -> Sums:
        """Sums of evaluation statistics for one test batch (called under ``torch.no_grad``, eval mode)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Task state saved in checkpoints (e.g. a monitor's optimizer)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
