"""Steps to target: evaluations every N steps into evals.jsonl, the first reaching the target in summary.json,
``target.stop``, and the config checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tvlars.config import validate
from tvlars.errors import UserError
from tvlars.instruments import Target
from tvlars.records import read_jsonl
from tvlars.run import run


def test_accuracies_are_reached_from_below_and_losses_from_above() -> None:
    assert Target("test_top1", 50.0).reached({"test_top1": 50.0})
    assert not Target("test_top5", 50.0).reached({"test_top5": 49.9})
    assert Target("train_loss", 0.5).reached({"train_loss": 0.4})
    assert not Target("test_loss", 0.5).reached({"test_loss": 0.6})
    assert not Target("test_loss", 0.5).reached({"test_loss": math.nan})
    assert not Target("test_top1", 0.0).reached({"test_loss": 0.0})


def test_evaluations_every_n_steps_fix_the_steps_to_target(tiny_cfg, tmp_path: Path) -> None:
    summary = run(tiny_cfg("epochs=3", "eval_every_steps=3", "target.metric=test_top1", "target.value=25"))
    rows = read_jsonl(tmp_path / "run" / "evals.jsonl")
    # every 3 steps and at the 3 epoch ends (4 steps each); step 12 is both
    assert [r["step"] for r in rows] == [3, 4, 6, 8, 9, 12]
    assert [r["epoch"] for r in rows] == [s / 4 for s in (3, 4, 6, 8, 9, 12)]
    assert [r["images"] for r in rows] == [64 * r["step"] for r in rows]
    times = [r["train_time_s"] for r in rows]
    assert times == sorted(times) and times[0] > 0
    for row in rows:
        assert {"test_loss", "test_top1", "test_top5", "train_loss", "train_top1"} <= row.keys()
    reached = [r for r in rows if r["test_top1"] >= 25]
    assert reached, "the tiny task should reach 25 % within 3 epochs"
    first = reached[0]
    assert summary["steps_to_target"] == first["step"]
    assert summary["images_to_target"] == 64 * first["step"]
    assert summary["time_to_target_s"] == first["train_time_s"]
    assert summary["stopped_at_target"] is False and summary["steps"] == 12
    # epoch-end evaluations are the same ones metrics.jsonl holds
    epochs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["test_top1"] for r in epochs] == [r["test_top1"] for r in rows if r["step"] % 4 == 0]


def test_train_loss_is_the_mean_since_the_previous_evaluation(tiny_cfg, tmp_path: Path) -> None:
    run(tiny_cfg("epochs=1", "eval_every_steps=2"))
    first, second = read_jsonl(tmp_path / "run" / "evals.jsonl")
    epoch = read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]
    assert (first["train_loss"] + second["train_loss"]) / 2 == pytest.approx(epoch["train_loss"], rel=1e-6)


def test_target_stop_ends_the_run_at_the_evaluation_that_reaches_it(tiny_cfg, tmp_path: Path) -> None:
    overrides = ("epochs=5", "eval_every_steps=1", "target.metric=train_loss", "target.value=2.2", "target.stop=true")
    summary = run(tiny_cfg(*overrides))
    evals = read_jsonl(tmp_path / "run" / "evals.jsonl")
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert summary["status"] == "completed" and summary["stopped_at_target"] is True
    assert summary["steps"] == summary["steps_to_target"] == evals[-1]["step"] < 20
    assert evals[-1]["train_loss"] <= 2.2 and all(r["train_loss"] > 2.2 for r in evals[:-1])
    assert metrics[-1]["step"] == summary["steps"]  # the partial epoch's row, with the stopping evaluation
    assert metrics[-1]["test_top1"] == evals[-1]["test_top1"] == summary["final_test_top1"]
    assert run(tiny_cfg(*overrides)) == json.loads((tmp_path / "run" / "summary.json").read_text())  # final


def test_an_unreached_target_is_null(tiny_cfg) -> None:
    summary = run(tiny_cfg("epochs=1", "target.metric=test_top1", "target.value=101"))
    assert summary["steps_to_target"] is None and summary["images_to_target"] is None
    assert summary["time_to_target_s"] is None and summary["stopped_at_target"] is False


@pytest.mark.parametrize(("overrides", "message"), [
    (["target.metric=test_accuracy", "target.value=90"], r"target.metric=test_accuracy is not a metric of task "
                                                         r"tvlars.tasks.Classification \(choose one of: train_loss"),
    (["target.metric=test_top1"], "target.metric=test_top1 needs target.value"),
    (["target.value=90"], "target.value and target.stop need target.metric"),
    (["target.stop=true"], "need target.metric"),
    (["task=barlow_twins", "target.metric=test_top1", "target.value=90"], "choose one of: train_loss, "
                                                                          "train_probe_top1, test_probe_top1"),
    (["eval_every_steps=-1"], "eval_every_steps must be >= 0"),
    (["log_noise_scale_every=-2"], "log_noise_scale_every must be >= 0"),
    (["log_sharpness_every=-1"], "log_sharpness_every must be >= 0"),
    (["sharpness_iters=0"], "sharpness_iters must be >= 1"),
    (["log_noise_scale_every=5", "batch_size=63"], "batch_size must be even"),
])
def test_instrument_settings_are_checked_at_composition(overrides: list[str], message: str, tiny_cfg) -> None:
    with pytest.raises(UserError, match=message):
        validate(tiny_cfg(*overrides))


def test_ssl_targets_and_odd_batches_under_ddp_are_accepted(tiny_cfg) -> None:
    validate(tiny_cfg("task=barlow_twins", "target.metric=test_probe_top1", "target.value=50"))
    validate(tiny_cfg("log_noise_scale_every=5", "batch_size=66"), world_size=2)
