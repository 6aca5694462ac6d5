"""The instruments in the training loop: they leave training bit-identical, write finite records, resume exactly,
and add no host synchronisation to steps where nothing is due."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.helpers import compose_config, tiny
from tvlars import distributed
from tvlars.build import build
from tvlars.engine import TrainState
from tvlars.records import RunRecords, read_jsonl
from tvlars.run import run

# Random crops and flips: their draws must not move when an instrument runs (num_workers=0: the sampler path then
# augments in this process, with the global RNG).
AUGMENT = ("dataset.augment.crop_padding=2", "dataset.augment.hflip=true", "num_workers=0")
INSTRUMENTS = ("eval_every_steps=3", "log_noise_scale_every=2", "log_sharpness_every=3", "sharpness_iters=4",
               "target.metric=test_top1", "target.value=20")


def _trained(run_dir: Path) -> tuple[list[dict], dict[str, torch.Tensor]]:
    rows = [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k}
            for r in read_jsonl(run_dir / "metrics.jsonl")]
    return rows, torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


@pytest.mark.parametrize("on_device", ["true", "false"])
def test_measuring_leaves_training_bit_identical(on_device: str, tiny_cfg, tmp_path: Path) -> None:
    common = ("epochs=2", f"data.on_device={on_device}", *AUGMENT)
    run(tiny_cfg(*common, f"run_dir={tmp_path / 'plain'}"))
    run(tiny_cfg(*common, *INSTRUMENTS, f"run_dir={tmp_path / 'measured'}"))
    (plain_rows, plain_model), (rows, model) = _trained(tmp_path / "plain"), _trained(tmp_path / "measured")
    assert rows == plain_rows  # the same train losses, accuracies and test metrics, to the last bit
    for name, tensor in plain_model.items():
        assert torch.equal(model[name], tensor), name  # BatchNorm running statistics included


def test_records_hold_finite_values_at_the_expected_steps(tiny_cfg, tmp_path: Path) -> None:
    summary = run(tiny_cfg("epochs=2", *INSTRUMENTS))
    noise = read_jsonl(tmp_path / "run" / "noise_scale.jsonl")
    sharpness = read_jsonl(tmp_path / "run" / "sharpness.jsonl")
    assert [(r["step"], r["epoch"]) for r in noise] == [(2, 1), (4, 1), (6, 2), (8, 2)]
    assert [(r["step"], r["epoch"]) for r in sharpness] == [(3, 1), (6, 2)]
    for row in noise:
        assert all(math.isfinite(row[k]) for k in ("b_simple", "g2", "trace_sigma"))
        assert row["b_simple"] == pytest.approx(row["trace_sigma"] / row["g2"])
    for row in sharpness:
        assert math.isfinite(row["lambda_max"]) and row["lambda_max"] != 0
        assert row["lr"] == 0.1 and row["stability_threshold"] == pytest.approx(3.8 / (2.8 * 0.1))  # Nesterov
    assert summary["steps_to_target"] is not None
    epochs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(epochs) == 2 and all(0 < r["measure_time_s"] for r in epochs)  # each epoch measured both


def test_measurement_time_is_recorded_only_with_a_measurement_on(tiny_cfg, tmp_path: Path) -> None:
    """``measure_time_s`` holds the sharpness and noise-scale time, not the evaluations'; off without them."""
    run(tiny_cfg("epochs=1", "eval_every_steps=2", f"run_dir={tmp_path / 'evals'}"))
    assert all("measure_time_s" not in r for r in read_jsonl(tmp_path / "evals" / "metrics.jsonl"))
    run(tiny_cfg("epochs=1", "log_sharpness_every=2", f"run_dir={tmp_path / 'sharp'}"))
    (row,) = read_jsonl(tmp_path / "sharp" / "metrics.jsonl")
    assert 0 < row["measure_time_s"]


@pytest.mark.parametrize(("target", "steps"), [
    (("target.metric=train_loss", "target.value=2.3"), 4),  # reached before the checkpoint: carried by it
    (("target.metric=test_top1", "target.value=20"), 6),  # reached after the resume (precise BN: at step 6)
])
def test_a_resumed_run_records_what_an_uninterrupted_one_does(target: tuple[str, str], steps: int, tiny_cfg,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed just before the checkpoint of epoch 2 (the rows of steps 5–8 already written), then rerun: it
    resumes from the checkpoint of epoch 1 (step 4) and cuts every log back to it."""
    overrides = ("epochs=3", *AUGMENT, *INSTRUMENTS, *target)
    straight = run(tiny_cfg(*overrides, f"run_dir={tmp_path / 'straight'}"))
    save = RunRecords.save_checkpoint

    def die_at_epoch_2(self: RunRecords, state: dict) -> None:
        if state["train_state"]["epoch"] == 2:
            raise KeyboardInterrupt  # as a SIGKILL would
        save(self, state)

    monkeypatch.setattr(RunRecords, "save_checkpoint", die_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_cfg(*overrides, f"run_dir={tmp_path / 'killed'}"))
    assert [r["step"] for r in read_jsonl(tmp_path / "killed" / "noise_scale.jsonl")] == [2, 4, 6, 8]
    monkeypatch.setattr(RunRecords, "save_checkpoint", save)
    resumed = run(tiny_cfg(*overrides, f"run_dir={tmp_path / 'killed'}"))
    for name in ("noise_scale", "sharpness"):
        assert read_jsonl(tmp_path / "killed" / f"{name}.jsonl") == read_jsonl(tmp_path / "straight" / f"{name}.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_time_s"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "killed" / "evals.jsonl")) == \
        strip(read_jsonl(tmp_path / "straight" / "evals.jsonl"))
    for key in ("steps_to_target", "images_to_target", "final_test_top1", "steps"):
        assert resumed[key] == straight[key], key
    assert resumed["steps_to_target"] == steps


def test_steps_where_nothing_is_due_do_not_synchronise(tiny_cfg) -> None:
    from tests.nosync import NoHostSync

    cfg = tiny_cfg("eval_every_steps=100", "log_noise_scale_every=100", "log_sharpness_every=100",
                   "target.metric=test_top1", "target.value=50")
    engine = build(cfg, distributed.init("cpu")).engine
    batch = engine._to_device(next(iter(engine.train_loader)))
    loss, sums = engine._train_step(batch)
    state = TrainState(step=1)
    for _ in range(2):  # the first add of sums and the following ones
        with NoHostSync():
            engine.instruments.before_step(engine, state, batch)
            stop = engine.instruments.after_step(engine, state, sums)
        assert stop is False
        state.step += 1


@pytest.mark.parametrize("task", [("task=classification",), ("task=barlow_twins", "task.projector_dims=[16,16]")])
def test_tasks_declare_the_metrics_they_report(task: tuple[str, ...]) -> None:
    """``Task.metrics`` (the choices of ``target.metric``) are the keys the loop derives from the task's sums."""
    engine = build(compose_config(tiny(*task)), distributed.init("cpu")).engine
    train = engine.task.training_step(engine.model, engine._to_device(next(iter(engine.train_loader))))[1]
    with torch.no_grad():
        test = engine.task.eval_step(engine.model.eval(), engine._to_device(next(iter(engine.eval_loaders["test"]))))
    reported = {f"train_{k}" for k in train if k != "count"} | {f"test_{k}" for k in test if k != "count"}
    assert reported == set(engine.task.metrics)
