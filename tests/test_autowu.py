"""AutoWU: the LR rule, GP minimum detection on synthetic loss curves, exact resume, and a run of the loop."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tvlars.records import read_jsonl
from tvlars.run import run
from tvlars.schedules import AutoWU
from tvlars.schedules import autowu as autowu_module

SPE, TOTAL, MINIMUM = 10, 400, 100  # steps per epoch, total steps (W = 200), the curve's minimum
Curve = Callable[[int], float]


def u_curve(t: int) -> float:
    return 1.0 + ((t - MINIMUM) / 60.0) ** 2


def feed(schedule: AutoWU, curve: Curve, steps: range, seed: int = 0, noise: float = 0.05) -> list[float]:
    """Drive ``schedule`` as the loop does (lr, then observe) on ``curve`` plus seeded noise; returns the LRs."""
    gen = torch.Generator().manual_seed(seed)
    noises = torch.randn(steps.stop, generator=gen) * noise
    lrs = []
    for t in steps:
        lrs.append(schedule.lr(t))
        schedule.observe(t, torch.tensor(curve(t)) + noises[t])
    return lrs


def round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.fixture(scope="module")
def u_run() -> dict:
    """One uninterrupted run on the U-shaped curve (stopping a few epochs after the switch), with the
    state saved after epoch 6."""
    schedule = AutoWU(base_lr=0.1, steps_per_epoch=SPE, total_steps=TOTAL)
    lrs = feed(schedule, u_curve, range(6 * SPE))
    saved = round_trip(schedule.state_dict())
    lrs += feed(schedule, u_curve, range(6 * SPE, 20 * SPE))
    return {"schedule": schedule, "lrs": lrs, "saved": saved}


def test_lr_rule_without_detection() -> None:
    s = AutoWU(base_lr=0.1, steps_per_epoch=10, total_steps=100)  # W = 50
    gamma = (1.0 / 1e-5) ** (1 / 50)
    assert s.lr(0) == pytest.approx(1e-5)
    assert s.lr(49) == pytest.approx(1e-5 * gamma**49)
    assert (s.switch_step, s.detected) == (50, False)
    assert s.lr(50) == pytest.approx(1e-5 * gamma**49)  # decay starts from the current LR
    assert s.lr(75) == pytest.approx(1e-5 * gamma**49 * 0.5 * (1 + math.cos(math.pi * 25 / 50)))
    assert s.lr(100) == pytest.approx(0.0, abs=1e-12)
    c = AutoWU(base_lr=0.1, steps_per_epoch=10, total_steps=100, decay="const_cos", max_warmup_fraction=0.3)
    peak = 1e-5 * (1e5 ** (1 / 30)) ** 29
    assert [c.lr(t) for t in (30, 79, 80)] == pytest.approx([peak, peak, peak])
    assert c.lr(90) == pytest.approx(peak * 0.5)
    assert AutoWU(base_lr=20.0, steps_per_epoch=1, total_steps=10, max_lr=None).max_lr == 20.0
    assert AutoWU(base_lr=0.1, steps_per_epoch=1, total_steps=10, max_warmup_fraction=0.0).lr(0) == 1.0


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"min_lr": 2.0}, "min_lr"), ({"decay": "step"}, "decay"), ({"max_warmup_fraction": 1.5}, "max_warmup_fraction"),
    ({"confidence": 1.0}, "confidence"), ({"patience": 0}, "patience"), ({"cooldown_fraction": -0.1}, "cooldown"),
])
def test_invalid_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        AutoWU(base_lr=0.1, steps_per_epoch=10, total_steps=100, **kwargs)


def test_switches_just_after_the_known_minimum_and_not_before(u_run: dict) -> None:
    s: AutoWU = u_run["schedule"]
    assert s.detected
    assert MINIMUM < s.switch_step <= MINIMUM + 8 * SPE
    assert s.switch_step % SPE == 0
    assert all(not t["positive"] for t in s.tests if t["step"] < MINIMUM)
    assert [t["positive"] for t in s.tests[-3:]] == [True, True, True]
    # decay starts from the LR at the GP's minimum: within 20 warm-up steps of the true one
    log_gamma = s.log_gamma
    assert abs(math.log(s.switch_lr / s.warmup_lr(MINIMUM))) < 20 * log_gamma
    assert u_run["lrs"][s.switch_step] == pytest.approx(s.switch_lr)
    assert u_run["lrs"][s.switch_step - 1] == pytest.approx(s.warmup_lr(s.switch_step - 1))
    assert len(s.tests) == s.switch_step // SPE  # no tests after the switch


def test_resume_mid_warmup_gives_the_same_switch(u_run: dict) -> None:
    resumed = AutoWU(base_lr=0.1, steps_per_epoch=SPE, total_steps=TOTAL)
    resumed.load_state_dict(u_run["saved"])
    assert resumed.switch_step == 200 and not resumed.detected and len(resumed.tests) == 6
    lrs = feed(resumed, u_curve, range(6 * SPE, 20 * SPE))
    original: AutoWU = u_run["schedule"]
    assert (resumed.switch_step, resumed.switch_lr) == (original.switch_step, original.switch_lr)
    assert lrs == u_run["lrs"][6 * SPE:]
    assert [t["p"] for t in resumed.tests] == [t["p"] for t in original.tests]


def test_never_switches_on_a_decreasing_curve() -> None:
    s = AutoWU(base_lr=0.1, steps_per_epoch=10, total_steps=200)
    feed(s, lambda t: 0.2 + math.exp(-t / 60.0), range(200))
    assert not s.detected and max(t["streak"] for t in s.tests) < s.patience  # noise may give a lone positive
    assert len(s.tests) == 10 and s.switch_step == 100
    assert s.switch_lr == pytest.approx(s.warmup_lr(99))


def test_few_steps_per_epoch_and_non_finite_losses() -> None:
    """Two steps per epoch, every 7th loss NaN or inf: those are dropped and the minimum is still found."""
    s = AutoWU(base_lr=0.1, steps_per_epoch=2, total_steps=200)

    def curve(t: int) -> float:
        return (math.nan if t % 14 == 0 else math.inf) if t % 7 == 0 else 1.0 + ((t - 30) / 20.0) ** 2

    feed(s, curve, range(80))
    assert s.tests[0]["points"] == 1 and s.tests[0]["votes"] == 0  # too few points: negative, no GP
    assert s.detected and 30 < s.switch_step <= 60
    assert torch.isnan(s.history[0]) and s.history.numel() == s.switch_step


def test_epoch_losses_are_averaged_over_ranks_before_the_host_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:  # two ranks with the same losses
        calls.append(tensor.clone())
        return tensor.mul_(2)

    monkeypatch.setattr(autowu_module.distributed, "all_reduce_sum", fake_all_reduce_sum)
    monkeypatch.setattr(autowu_module, "_world_size", lambda: 2)
    s = AutoWU(base_lr=0.1, steps_per_epoch=4, total_steps=100)
    for t in range(4):
        s.observe(t, torch.tensor(float(t)))
    assert len(calls) == 1 and torch.equal(s.history, torch.arange(4, dtype=torch.float64))


def _switch_on_two_processes(rank: int, store: str, out: str) -> None:
    """Rank 1's own test would call every epoch positive (as if its GP's rounding differed): its switch must still
    be rank 0's."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        s = AutoWU(base_lr=0.1, steps_per_epoch=SPE, total_steps=TOTAL)
        if rank == 1:
            s._epoch_test = lambda step: (True, 0.5, {"points": 0, "votes": 5, "p": [], "x_min": [], "lr_at_min": 0.5})
        feed(s, u_curve, range(20 * SPE))
        torch.save((s.switch_step, s.switch_lr, [t["positive"] for t in s.tests]), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_takes_rank_0s_switch(tmp_path: Path) -> None:
    mp.spawn(_switch_on_two_processes, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    single = AutoWU(base_lr=0.1, steps_per_epoch=SPE, total_steps=TOTAL)
    feed(single, u_curve, range(20 * SPE))  # the same losses on every rank: their all-reduced mean is the loss
    expected = (single.switch_step, single.switch_lr, [t["positive"] for t in single.tests])
    assert [torch.load(tmp_path / f"out.{rank}") for rank in range(2)] == [expected, expected]


def test_training_loop_runs_autowu_and_checkpoints_its_state(tiny_cfg, tmp_path: Path) -> None:
    summary = run(tiny_cfg("schedule=autowu", "optimizer=lamb", "schedule.max_warmup_fraction=1.0"))
    assert summary["status"] == "completed"
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["schedule"]
    assert len(state["tests"]) == 2 and state["history"].numel() == 8  # 2 epochs of 4 steps
    assert set(state) >= {"switch_step", "switch_lr", "detected", "streak", "generator", "gp", "gp_optimizer"}
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert rows[0]["lr"] == pytest.approx(1e-5 * (1e5 ** (1 / 8)) ** 3)  # lr of step 3, W = 8
    # summary.json records the switch, so a table can tell a detected warm-up from one its cap ended
    assert {k: summary[k] for k in ("autowu_detected", "autowu_switch_step", "autowu_switch_lr")} == \
        {"autowu_detected": state["detected"], "autowu_switch_step": state["switch_step"],
         "autowu_switch_lr": state["switch_lr"]}
    assert not state["detected"] and state["switch_step"] == 8  # too few epochs to detect: the cap, W = 8
    assert "autowu_detected" not in run(tiny_cfg("optimizer=lamb", f"run_dir={tmp_path / 'plain'}"))


def test_training_loop_resume_mid_warmup_equals_an_uninterrupted_run(tiny_cfg, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tvlars.engine import Engine, TrainState

    args = ("schedule=autowu", "optimizer=lamb", "schedule.max_warmup_fraction=1.0", "epochs=3")
    run(tiny_cfg(*args, f"run_dir={tmp_path / 'straight'}"))
    end_epoch = Engine._end_epoch

    def crash_after_epoch_2(self: Engine, state: TrainState, row: dict, snapshots: list) -> None:
        end_epoch(self, state, row, snapshots)
        if state.epoch == 2:
            raise RuntimeError("killed")

    monkeypatch.setattr(Engine, "_end_epoch", crash_after_epoch_2)
    with pytest.raises(RuntimeError, match="killed"):
        run(tiny_cfg(*args, f"run_dir={tmp_path / 'killed'}"))
    monkeypatch.setattr(Engine, "_end_epoch", end_epoch)
    assert run(tiny_cfg(*args, f"run_dir={tmp_path / 'killed'}"))["status"] == "completed"
    states = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=False)["schedule"]
              for d in ("straight", "killed")]
    assert len(states[0]["tests"]) == 3
    assert [t["p"] for t in states[0]["tests"]] == [t["p"] for t in states[1]["tests"]]
    assert (states[0]["switch_step"], states[0]["switch_lr"]) == (states[1]["switch_step"], states[1]["switch_lr"])
    strip = lambda rows: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "straight" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "killed" /
                                                                                         "metrics.jsonl"))
