"""A training step of the loop (``Engine.loop_step``) of every task with every optimizer preset does no host sync:
no value read on the host, no tensor made from host data, no host/device copy (``tests/nosync.py``). Factory ops
(allocations and fills, not syncs) are allowed: torch's double backward, which CDAT runs, makes some."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import compose_config, tiny
from tests.nosync import NoHostSync
from tvlars import distributed
from tvlars.build import build
from tvlars.engine import EpochTotals, TrainState
from tvlars.paths import CONFIG_DIR
from tvlars.run import run
from tvlars.tasks.ssl import barlow_twins_loss, nt_xent_loss

OPTIMIZERS = sorted(p.stem for p in (Path(CONFIG_DIR) / "optimizer").glob("*.yaml"))
SSL = ("task.projector_dims=[16,16]",)
TASKS = {"classification": (), "barlow_twins": ("task=barlow_twins", *SSL), "simclr": ("task=simclr", *SSL)}


def _steps_without_sync(*overrides: str) -> None:
    cfg = compose_config(tiny("data.on_device=true", "dataset.augment.crop_padding=2", "dataset.augment.hflip=true",
                              *overrides))
    engine = build(cfg, distributed.init("cpu")).engine
    state, totals = TrainState(), EpochTotals(torch.zeros((), dtype=torch.bool))
    batches = iter(engine.train_loader)
    engine.loop_step(state, next(batches), totals)  # the first step creates state (buffers, counters)
    batch = next(batches)
    # torch's AdamW (not capturable, not fused) keeps its step counters on the host and reads them there
    counters = [s["step"] for s in engine.optimizer.state.values() if isinstance(engine.optimizer, torch.optim.AdamW)]
    with NoHostSync(factories=False, host_resident=counters):
        loss, _, _ = engine.loop_step(state, batch, totals)
    assert torch.isfinite(loss) and state.step == 2


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_loop_step_does_not_synchronise(task: str, optimizer: str) -> None:
    _steps_without_sync(*TASKS[task], f"optimizer={optimizer}")


@pytest.mark.parametrize("schedule", ["warmup_cosine", "autowu"])
def test_schedules_do_not_synchronise_within_an_epoch(schedule: str) -> None:
    _steps_without_sync(f"schedule={schedule}")


def test_a_linear_evaluation_step_does_not_synchronise(tiny_cfg, tmp_path: Path) -> None:
    run(tiny_cfg("task=simclr", *SSL, "task.linear_eval.epochs=1", "epochs=1"))
    _steps_without_sync("task=linear_eval", "model=from_backbone", f"backbone={tmp_path / 'run' / 'backbone.pt'}")


@pytest.mark.parametrize("loss", [barlow_twins_loss, nt_xent_loss])
def test_ssl_losses_are_float32_under_bf16_autocast(loss) -> None:
    """Late in Barlow Twins training 1 − C_ii is ~1e-3, below bf16's resolution near 1: the loss must not round."""
    torch.manual_seed(0)
    z1 = torch.randn(64, 32)
    z2 = z1 + 1e-3 * torch.randn(64, 32)  # nearly perfectly correlated views
    extra = {"lambd": 0.005} if loss is barlow_twins_loss else {"temperature": 0.5}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(z1.bfloat16(), z2.bfloat16(), **extra)
    fp32 = loss(z1.bfloat16().float(), z2.bfloat16().float(), **extra)  # the same inputs, no autocast
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, fp32, rtol=1e-5, atol=1e-7)
