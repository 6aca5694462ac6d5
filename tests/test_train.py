"""End-to-end runs of the training loop on tiny synthetic data: records, skip, seeds, divergence, closures."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
import wandb

from tvlars.loggers import WandbLogger
from tvlars.preemption import Stopped
from tvlars.records import read_jsonl
from tvlars.run import run


def test_run_writes_records(tiny_cfg, tmp_path: Path) -> None:
    summary = run(tiny_cfg("epochs=3"))
    run_dir = tmp_path / "run"
    assert summary["status"] == "completed"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, default=str))
    for key in ("run_id", "seed", "config", "git_commit", "versions", "device", "world_size", "wall_time_s",
                "images_per_s", "best_test_top1", "best_test_top5", "final_test_top1", "final_test_top5", "lr"):
        assert key in on_disk, key
    assert on_disk["epochs_completed"] == 3 and on_disk["steps"] == 3 * 4
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr", "epoch_time_s",
            "train_images_per_s"} <= rows[0].keys()
    assert (run_dir / "config.yaml").read_text().startswith("dataset:")
    assert (run_dir / "checkpoint.pt").exists()
    # the synthetic task is learnable: the run must beat chance (10%) clearly
    assert on_disk["best_test_top1"] > 30.0


def test_validation_every_evaluation_test_once_and_precise_bn_beside_the_raw_statistics(tiny_cfg,
                                                                                          tmp_path: Path) -> None:
    summary = run(tiny_cfg("epochs=3", "dataset.val_size=64", "precise_bn_images=128"))
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert all({"val_top1", "val_loss", "val_top1_rawbn"} <= r.keys() for r in rows)
    assert ["test_top1" in r for r in rows] == [False, False, True]  # the test set is evaluated once, at the end
    assert {"test_top1_rawbn", "test_top5"} <= rows[-1].keys()
    assert summary["final_val_top1"] == rows[-1]["val_top1"] and summary["final_test_top1"] == rows[-1]["test_top1"]
    assert summary["best_val_top1"] == max(r["val_top1"] for r in rows)
    assert summary["final_test_top1_rawbn"] == rows[-1]["test_top1_rawbn"]
    assert summary["final_train_top1"] == rows[-1]["train_top1"]
    assert summary["steps_per_epoch"] == (256 - 64) // 64
    # recalibrating is not a no-op: after a few large steps the raw running statistics lag behind the weights
    assert any(r["val_loss"] != r["val_loss_rawbn"] for r in rows)


def test_precise_bn_leaves_training_untouched(tiny_cfg, tmp_path: Path) -> None:
    """Training with and without precise BN is bit-identical (the recalibration restores every buffer and random
    state); only the evaluated numbers differ."""
    run(tiny_cfg(f"run_dir={tmp_path / 'a'}", "precise_bn_images=0"))
    run(tiny_cfg(f"run_dir={tmp_path / 'b'}", "precise_bn_images=128"))
    a, b = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in "ab")
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["test_loss"] for r in a] != [r["test_loss"] for r in b]
    assert "test_top1_rawbn" not in a[-1] and b[-1]["test_loss_rawbn"] == a[-1]["test_loss"]


def test_completed_run_is_skipped(tiny_cfg, caplog: pytest.LogCaptureFixture) -> None:
    first = run(tiny_cfg())
    with caplog.at_level("INFO", logger="tvlars"):
        second = run(tiny_cfg())
    assert second == json.loads(json.dumps(first, default=str))
    assert "already completed; skipping" in caplog.text


def test_run_dir_of_another_experiment_is_refused(tiny_cfg) -> None:
    from tvlars.errors import UserError

    run(tiny_cfg("epochs=1"))
    with pytest.raises(UserError, match="holds a different run"):
        run(tiny_cfg("epochs=1", "optimizer.lr=0.05"))


def test_same_seed_same_metrics_other_seed_differs(tiny_cfg, tmp_path: Path) -> None:
    a = run(tiny_cfg(f"run_dir={tmp_path / 'a'}"))
    b = run(tiny_cfg(f"run_dir={tmp_path / 'b'}"))
    c = run(tiny_cfg(f"run_dir={tmp_path / 'c'}", "seed=1"))
    rows = [read_jsonl(tmp_path / d / "metrics.jsonl") for d in "abc"]
    strip = lambda rs: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in rs]  # noqa: E731
    assert strip(rows[0]) == strip(rows[1])
    assert strip(rows[0]) != strip(rows[2])
    assert a["final_test_top1"] == b["final_test_top1"]
    assert c["seed"] == 1


def test_divergence_ends_the_run_as_diverged(tiny_cfg, tmp_path: Path) -> None:
    summary = run(tiny_cfg("optimizer.lr=1e30", "log_every=1"))
    assert summary["status"] == "diverged"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"
    # a diverged run is final: a rerun skips it instead of diverging again
    assert run(tiny_cfg("optimizer.lr=1e30", "log_every=1"))["status"] == "diverged"


class ClosureSGD(torch.optim.SGD):
    """SGD that insists on a closure, like a curvature-aware tuner does."""

    needs_closure = True
    calls = 0

    def step(self, closure=None):  # type: ignore[override]
        assert closure is not None, "the loop must pass a closure"
        with torch.enable_grad():
            loss = closure()
        type(self).calls += 1
        assert torch.isfinite(loss)
        return super().step()


def test_loop_passes_a_closure_to_optimizers_that_need_one(tiny_cfg) -> None:
    cfg = tiny_cfg("epochs=1")
    cfg.optimizer._target_ = f"{__name__}.ClosureSGD"
    ClosureSGD.calls = 0
    summary = run(cfg)
    assert summary["status"] == "completed" and ClosureSGD.calls == summary["steps"] == 4


def test_bf16_and_channels_last_run(tiny_cfg) -> None:
    summary = run(tiny_cfg("epochs=1", "precision=bf16", "channels_last=true"))
    assert summary["status"] == "completed"


def test_warmup_cosine_lr_is_recorded_per_epoch(tiny_cfg, tmp_path: Path) -> None:
    run(tiny_cfg("epochs=4", "schedule=warmup_cosine", "schedule.warmup_epochs=1", "optimizer.lr=0.2"))
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert lrs[0] == pytest.approx(0.2)  # the last warm-up step (step 3 of 4 per epoch) reaches the peak
    q = 0.5 * (1 + math.cos(math.pi * 11 / 12))  # last step 15: (15 - 4) / (16 - 4) of the cosine
    assert lrs[-1] == pytest.approx(0.2 * (q + 0.001 * (1 - q)))
    assert lrs == sorted(lrs, reverse=True)


def test_wandb_offline_run_is_written_under_the_run_dir(tiny_cfg, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="tvlars"):
        summary = run(tiny_cfg("epochs=1", "logger=wandb", "logger.mode=offline"))
    assert summary["logger_id"]
    [offline] = (tmp_path / "run" / "wandb").glob(f"offline-run-*-{summary['logger_id']}")
    assert f"wandb sync {offline}" in caplog.text


def test_resumed_run_continues_the_same_wandb_run(tiny_cfg, tmp_path: Path) -> None:
    first = run(tiny_cfg("epochs=1", "logger=wandb", "logger.mode=offline"))
    summary_path = tmp_path / "run" / "summary.json"
    interrupted = {**json.loads(summary_path.read_text()), "status": "running"}  # as if killed after the checkpoint
    summary_path.write_text(json.dumps(interrupted))
    second = run(tiny_cfg("epochs=1", "logger=wandb", "logger.mode=offline"))
    assert second["status"] == "completed"
    assert second["logger_id"] == first["logger_id"]


class StoppedWandb(WandbLogger):
    """The W&B logger of a run that gets SIGTERM at step 2, before it writes any checkpoint; it notes the
    ``logger_id`` that ``summary.json`` holds at that moment."""

    summary_id: str | None = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        super().log(metrics, step)
        if step == 2 and type(self).summary_id is None:
            type(self).summary_id = json.loads((Path(self.run_dir or "") / "summary.json").read_text())["logger_id"]
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_run_stopped_before_any_checkpoint_continues_its_wandb_run_which_was_marked_preempted(
        tiny_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(wandb.Run, "mark_preempting", lambda self: calls.append(f"preempting {self.id}"))
    cfg = tiny_cfg("epochs=1", "checkpoint_every=0", "log_every=1", "logger=wandb", "logger.mode=offline")
    cfg.logger._target_ = f"{__name__}.StoppedWandb"
    with pytest.raises(Stopped):
        run(cfg)
    first = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert first["status"] == "interrupted" and StoppedWandb.summary_id == first["logger_id"] is not None
    assert calls == [f"preempting {first['logger_id']}"]
    second = run(tiny_cfg("epochs=1", "checkpoint_every=0", "logger=wandb", "logger.mode=offline"))
    assert second["status"] == "completed" and second["logger_id"] == first["logger_id"]
    assert len(calls) == 1


@pytest.mark.parametrize("optimizer", ["lars", "tvlars", "lamb", "lamb_official", "lambc"])
def test_trust_ratio_statistics_are_recorded(optimizer: str, tiny_cfg, tmp_path: Path) -> None:
    run(tiny_cfg(f"optimizer={optimizer}", "log_trust_every=2", "epochs=1"))
    header, *rows = read_jsonl(tmp_path / "run" / "trust.jsonl")
    assert [r["step"] for r in rows] == [2, 4]
    n = len(header["layers"])
    assert n > 10 and "stem.0.weight" in header["layers"]
    for row in rows:
        assert len(row["trust_ratio"]) == len(row["weight_norm"]) == len(row["update_norm"]) == n
    if optimizer == "tvlars":
        assert 0 < rows[-1]["phi"] <= 1.0 + 1e-3


def test_sgd_records_no_trust_file(tiny_cfg, tmp_path: Path) -> None:
    run(tiny_cfg("log_trust_every=1", "epochs=1"))
    assert not (tmp_path / "run" / "trust.jsonl").exists()
