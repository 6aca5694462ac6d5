"""A run killed with SIGKILL after a checkpoint, or stopped by SIGTERM (a checkpoint in the middle of an epoch),
resumes and ends exactly like an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from tests.helpers import ROOT, cli_env, compose_config, run_cli, tiny
from tvlars.loggers import NullLogger
from tvlars.models.mlp import MLP
from tvlars.preemption import Stopped
from tvlars.records import read_jsonl
from tvlars.run import run

pytestmark = pytest.mark.slow

# With random crops and flips: their draws must repeat after a resume, on either data path.
ARGS = tiny("dataset.num_train=2048", "epochs=4", "batch_size=128", "checkpoint_every=1",
            "dataset.augment.crop_padding=2", "dataset.augment.hflip=true")


def _metrics(run_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in read_jsonl(run_dir / name)]


def _same_model(a: Path, b: Path) -> bool:
    first, second = (torch.load(d / "checkpoint.pt", weights_only=False)["model"] for d in (a, b))
    return all(torch.equal(first[k], second[k]) for k in first)


class SignalAt(NullLogger):
    """A logger that sends its own process ``times`` SIGTERMs when it is first given step ``step`` (step 0: when the
    run starts, before its first step): a real signal at a known point of the loop (the stop check of a step comes
    right after the step's log)."""

    def __init__(self, run_dir: str | None = None, step: int = 0, times: int = 1) -> None:
        super().__init__(run_dir)
        self.step, self.times = step, times

    def _signal(self) -> None:
        for _ in range(self.times):
            os.kill(os.getpid(), signal.SIGTERM)
        self.times = 0

    def start(self, config: dict, resume_id: str | None) -> None:
        if self.step == 0:
            self._signal()

    def log(self, metrics: dict, step: int) -> None:
        if step == self.step:
            self._signal()


class DropoutMLP(MLP):
    """An MLP whose forward draws random numbers (dropout): a resume must restore the random state of the step."""

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(nn.functional.dropout(self.features(x), 0.3, self.training))


# 16 steps per epoch, a stop check after every step, trust ratios and step evaluations between the checks
STOPPED = ("dataset.num_train=2048", "epochs=3", "batch_size=128", "log_every=1", "optimizer=lars", "log_trust_every=3",
           "eval_every_steps=6", "dataset.augment.crop_padding=2", "dataset.augment.hflip=true")


@pytest.mark.parametrize(("on_device", "model"), [("true", "resnet18"), ("false", "resnet18"), ("true", "dropout")])
def test_sigterm_checkpoints_mid_epoch_and_the_rerun_ends_exactly_as_uninterrupted(on_device: str, model: str,
                                                                                  tmp_path: Path) -> None:
    """Stopped after step 20 (4 of epoch 2's 16 steps): the checkpoint holds the epoch's progress, the run is
    recorded interrupted, and the rerun's records (metrics, trust ratios, step evaluations) and weights equal an
    uninterrupted run's, with augmentations (and dropout) drawing the same random numbers."""
    overrides = tiny(*STOPPED, f"data.on_device={on_device}", *(("model=mlp", "model.hidden=[32]")
                                                                if model == "dropout" else ()))

    def config(run_dir: Path, stop: bool):
        cfg = compose_config([*overrides, f"run_dir={run_dir}"])
        if model == "dropout":
            cfg.model._target_ = f"{__name__}.DropoutMLP"
        if stop:
            cfg.logger = {"_target_": f"{__name__}.SignalAt", "step": 20}
        return cfg

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run(config(straight, stop=False))
    with pytest.raises(Stopped, match="stopped by SIGTERM at step 20, checkpointed; rerun the same command"):
        run(config(stopped, stop=True))
    checkpoint = torch.load(stopped / "checkpoint.pt", weights_only=False)
    assert checkpoint["train_state"]["step"] == 20 and checkpoint["epoch_progress"]["steps"] == 4
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["error"].startswith("stopped by SIGTERM at step 20")
    assert run(config(stopped, stop=False))["status"] == "completed"
    for name in ("metrics.jsonl", "trust.jsonl", "evals.jsonl"):
        assert _metrics(stopped, name) == _metrics(straight, name), name
    assert _same_model(stopped, straight)


def test_a_second_sigterm_stops_at_once_and_without_checkpoints_a_stop_says_the_rerun_starts_over(
        tmp_path: Path) -> None:
    cfg = compose_config(tiny(*STOPPED, f"run_dir={tmp_path / 'twice'}"))
    cfg.logger = {"_target_": f"{__name__}.SignalAt", "step": 20, "times": 2}
    with pytest.raises(Stopped, match="stopped at once by a second SIGTERM"):
        run(cfg)
    assert torch.load(tmp_path / "twice" / "checkpoint.pt", weights_only=False)["train_state"]["step"] == 16
    cfg = compose_config(tiny(*STOPPED, "checkpoint_every=0", f"run_dir={tmp_path / 'none'}"))
    cfg.logger = {"_target_": f"{__name__}.SignalAt", "step": 20}
    with pytest.raises(Stopped, match="at step 20; checkpoint_every=0 keeps no checkpoint, so a rerun starts over"):
        run(cfg)
    assert not (tmp_path / "none" / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "none" / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("on_device", ["true", "false"])
def test_sigkill_then_rerun_equals_uninterrupted(on_device: str, tmp_path: Path) -> None:
    args = [*ARGS, f"data.on_device={on_device}"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_cli([*args, f"run_dir={straight}"]).returncode == 0

    proc = subprocess.Popen([sys.executable, "-m", "tvlars.train", *args, f"run_dir={killed}"], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["status"] == "running", "the run finished before it could be killed; make it longer"

    resumed = run_cli([*args, f"run_dir={killed}"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout + resumed.stderr
    assert _metrics(killed) == _metrics(straight)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (straight, killed))
    for key in ("status", "best_test_top1", "final_test_top1", "final_test_top5", "final_test_loss", "steps"):
        assert a[key] == b[key], key


def test_sigterm_ends_the_cli_with_143_and_one_line_and_the_rerun_resumes_exactly(tmp_path: Path) -> None:
    args, stopped, straight = tiny(*STOPPED, "epochs=4"), tmp_path / "stopped", tmp_path / "straight"
    assert run_cli([*args, f"run_dir={straight}"]).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "tvlars.train", *args, f"run_dir={stopped}"], cwd=ROOT,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (stopped / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: stopped by SIGTERM at step "), err[-2000:]
    assert "Traceback" not in err
    assert json.loads((stopped / "summary.json").read_text())["status"] == "interrupted"
    resumed = run_cli([*args, f"run_dir={stopped}"])
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr[-2000:]
    assert _metrics(stopped) == _metrics(straight) and _same_model(stopped, straight)


def test_a_sigterm_to_rank_0_stops_every_ddp_rank_at_one_step_and_the_resume_is_exact(tmp_path: Path) -> None:
    """Only rank 0 gets the signal: the ranks agree on the stop, the checkpoint keeps each rank's random states and
    sums, and a resumed 2-process run ends as an uninterrupted one."""
    args = tiny(*STOPPED, "model=mlp", "model.hidden=[32]", "optimizer=sgd", "eval_every_steps=0")

    def torchrun(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "tvlars.train", *args, *extra], cwd=ROOT, env=cli_env(), capture_output=True,
                              text=True, timeout=300)

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert torchrun(f"run_dir={straight}").returncode == 0
    first = torchrun(f"run_dir={stopped}", "logger._target_=tests.test_resume.SignalAt", "+logger.step=20")
    assert first.returncode != 0 and first.stderr.count("error: stopped by SIGTERM at step 20") == 2, \
        first.stderr[-3000:]
    assert len(torch.load(stopped / "checkpoint.pt", weights_only=False)["epoch_progress"]["ranks"]) == 2
    resumed = torchrun(f"run_dir={stopped}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(stopped) == _metrics(straight) and _same_model(stopped, straight)


def test_a_submitit_job_that_times_out_checkpoints_is_requeued_and_resumes_exactly(tmp_path: Path) -> None:
    """submitit's timeout signal (SIGUSR2, sent here as submitit's controller sends it before the time limit): the
    job stops at a checkpoint, submitit's own handler requeues it, and the requeued job resumes and ends as an
    uninterrupted run."""
    args, stopped, straight = tiny(*STOPPED, "epochs=4"), tmp_path / "stopped", tmp_path / "straight"
    assert run_cli([*args, f"run_dir={straight}"]).returncode == 0
    sweep = subprocess.Popen([sys.executable, "-m", "tvlars.train", "--multirun", *args, f"run_dir={stopped}",
                              "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                              f"hydra.sweep.dir={tmp_path / 'multirun'}"], cwd=ROOT, env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (stopped / "checkpoint.pt").exists() and sweep.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    job = json.loads((stopped / ".lock").read_text())["pid"]  # the process training the run (a submitit task)
    os.kill(job, signal.SIGUSR2)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "multirun" / ".submitit").rglob("*_log.*"))
    assert "error: stopped by SIGUSR2 at step " in logs and "Requeued job" in logs and "resuming" in logs, logs[-3000:]
    assert "] interrupted: " in logs and "] failed: " not in logs  # the first attempt's record before the requeue
    assert json.loads((stopped / "summary.json").read_text())["status"] == "completed"
    assert _metrics(stopped) == _metrics(straight) and _same_model(stopped, straight)


def test_a_sigterm_before_the_first_step_stops_the_run_there(tmp_path: Path) -> None:
    """Asked to stop while it loads its data: the run stops at its first check, before training."""
    cfg = compose_config(tiny(f"run_dir={tmp_path / 'run'}"))
    cfg.logger = {"_target_": f"{__name__}.SignalAt", "step": 0}
    with pytest.raises(Stopped, match="^stopped by SIGTERM before its first step; rerun the same command"):
        run(cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_mid_epoch_checkpoint_resumes_under_another_world_size(tmp_path: Path) -> None:
    """Stopped mid-epoch by one process, resumed by two: the run completes (not exactly: the data order differs),
    with the world-size warning."""
    args = tiny(*STOPPED, "model=mlp", "model.hidden=[32]", "optimizer=sgd", "eval_every_steps=0",
                f"run_dir={tmp_path / 'run'}")
    cfg = compose_config(args)
    cfg.logger = {"_target_": f"{__name__}.SignalAt", "step": 20}
    with pytest.raises(Stopped):
        run(cfg)
    resumed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              "-m", "tvlars.train", *args], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "was started with 1 process(es), this one has 2" in resumed.stderr
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["train_loss"]) for r in rows)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
