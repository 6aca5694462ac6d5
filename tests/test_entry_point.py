"""The names of tvlars 0.1 that scripts written against it import and replace (docs/running.md#names-kept-for-scripts-
written-against-01): each one is still there and does what it did."""

from __future__ import annotations

import importlib

import pytest
import torch
from omegaconf import OmegaConf

import tvlars.build
import tvlars.distributed
import tvlars.engine
import tvlars.train
from tvlars.distributed import DistInfo

KEPT = {  # the 0.1 name -> what it is now
    "tvlars.train.CONFIG_DIR": "tvlars.paths.CONFIG_DIR",
    "tvlars.train.run": "tvlars.run.run",
    "tvlars.engine._add": "tvlars.tasks.base.add_sums",
    "tvlars.engine.TrainState": "tvlars.engine.TrainState",
    "tvlars.engine.seed_all": "tvlars.engine.seed_all",
    "tvlars.records.RunRecords": "tvlars.records.RunRecords",
    "tvlars.config.validate": "tvlars.config.validate",
    "tvlars.optim.tvlars.tvlars_from_epochs": "tvlars.optim.tvlars.TVLARS.from_epochs",
    "tvlars.distributed.dist": "torch.distributed",
    "tvlars.tasks.ssl.dist": "torch.distributed",
    "tvlars.distributed.world_size_from_env": "tvlars.distributed.world_size_from_env",
    "tvlars.distributed.shutdown": "tvlars.distributed.shutdown",
}


def _resolve(dotted: str) -> object:
    """The object a dotted name names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ImportError(dotted)


@pytest.mark.parametrize(("old", "now"), KEPT.items(), ids=list(KEPT))
def test_names_kept_for_0_1_scripts(old: str, now: str) -> None:
    assert _resolve(old) == _resolve(now)


def test_build_engine_gives_the_engine_and_the_dataset(tiny_cfg) -> None:
    cpu = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    engine, info = tvlars.train.build_engine(tiny_cfg(), cpu)
    assert isinstance(engine, tvlars.engine.Engine) and info.num_classes == 10


def test_a_ddp_class_assigned_in_tvlars_train_wraps_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripts count the wraps by assigning ``tvlars.train.DistributedDataParallel``: the build uses what they put
    there (through ``tvlars.distributed.ddp_wrapper``), and reading it gives it back."""
    assert tvlars.train.DistributedDataParallel is torch.nn.parallel.DistributedDataParallel
    wraps: list[dict] = []

    def recording_ddp(module: torch.nn.Module, **kwargs) -> torch.nn.Module:
        wraps.append(kwargs)
        return module

    monkeypatch.setattr(tvlars.train, "DistributedDataParallel", recording_ddp)
    assert tvlars.train.DistributedDataParallel is recording_ddp is tvlars.distributed.ddp_wrapper
    model = torch.nn.Linear(2, 2)
    cfg = OmegaConf.create({"compile": False})
    in_group = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), distributed=True)
    assert tvlars.build.wrap_for_training(model, cfg, in_group) is model
    assert wraps == [{"device_ids": None}]
    alone = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert tvlars.build.wrap_for_training(model, cfg, alone) is model and len(wraps) == 1


def test_a_stand_in_for_torch_distributed_is_what_the_helpers_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class FakeDist:
        @staticmethod
        def is_initialized() -> bool:
            return True

        @staticmethod
        def destroy_process_group() -> None:
            calls.append("destroy")

    monkeypatch.setattr(tvlars.distributed, "dist", FakeDist)
    monkeypatch.setattr(importlib.import_module("tvlars.tasks.ssl"), "dist", FakeDist)
    tvlars.distributed.shutdown()
    assert calls == ["destroy"]
