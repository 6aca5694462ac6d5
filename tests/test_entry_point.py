"""The 0.1 interface of ``tvlars.train`` that scripts written against it (the GPU acceptance script) rely on."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

import tvlars.build
import tvlars.paths
import tvlars.run
import tvlars.train
from tvlars.distributed import DistInfo


def test_names_kept_for_0_1_scripts() -> None:
    assert tvlars.train.run is tvlars.run.run
    assert tvlars.train.CONFIG_DIR == tvlars.paths.CONFIG_DIR
    assert tvlars.train.DistributedDataParallel is torch.nn.parallel.DistributedDataParallel


def test_a_ddp_class_replaced_in_tvlars_train_wraps_the_model(monkeypatch) -> None:
    """Scripts count the wraps by replacing ``tvlars.train.DistributedDataParallel``: the build must use it."""
    wraps: list[dict] = []

    def recording_ddp(module: torch.nn.Module, **kwargs) -> torch.nn.Module:
        wraps.append(kwargs)
        return module

    monkeypatch.setattr(tvlars.train, "DistributedDataParallel", recording_ddp)
    model = torch.nn.Linear(2, 2)
    cfg = OmegaConf.create({"compile": False})
    in_group = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), distributed=True)
    assert tvlars.build.wrap_for_training(model, cfg, in_group) is model
    assert wraps == [{"device_ids": None}]
    alone = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert tvlars.build.wrap_for_training(model, cfg, alone) is model and len(wraps) == 1
