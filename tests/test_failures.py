"""What a user can get wrong, and what goes wrong at night: one line and no traceback, records never destroyed,
interruptions recorded, a failing job that does not stop its sweep."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import ROOT, cli_env, run_cli, tiny
from tvlars.config import validate
from tvlars.errors import UserError
from tvlars.records import RunRecords, read_jsonl
from tvlars.run import follow_up_config, option_keys, run


def _one_error_line(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optimizer.lr=abc"], "optimizer.lr must be a number (got 'abc')"),
        (["device=tpu"], "device=tpu"),
        (["device=cuda"], "CUDA is not available"),
        (["optimizer.momentum=1.5"], "optimizer.momentum must be in [0, 1) (got 1.5)"),
        (["optimizer=lars", "optimizer.momentum=1.5"], "momentum must be in [0, 1) (got 1.5)"),
        (["optimizer=adamw", "optimizer.betas=[0.9,1.2]"], "optimizer.betas must be two numbers in [0, 1)"),
        (["optimizer=lamb", "optimizer.eps=-1"], "eps must be >= 0"),
        (["optimizer=tvlars", "optimizer.lam=-1"], "lam must be >= 0"),
        (["schedule=warmup_cosine", "schedule.warmup_epochs=-1"], "warmup_epochs must be >= 0"),
    ],
)
def test_bad_values_fail_before_anything_is_written(overrides: list[str], needle: str, tiny_cfg,
                                                     tmp_path: Path) -> None:
    if "device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match=re.escape(needle)):
        run(tiny_cfg(*overrides))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("override", "needle"), [("optimizer.lr=abc", "optimizer.lr must be a number"),
                                                  ("device=tpu", "device=tpu is not")])
def test_cli_bad_values_end_in_one_line(override: str, needle: str, tmp_path: Path) -> None:
    args = [o for o in tiny(f"out_dir={tmp_path}") if not o.startswith("device=")]
    _one_error_line(run_cli([*args, override]), needle)


def test_linear_eval_refuses_model_overrides_and_mismatched_backbones(tiny_cfg, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model=tvlars.models.ResNet does not apply"):
        validate(tiny_cfg("task=linear_eval", "backbone=x.pt"))
    run(tiny_cfg("task=simclr", "task.projector_dims=[32,16]", "task.linear_eval.epochs=1", "epochs=1"))
    backbone = tmp_path / "run" / "backbone.pt"
    with pytest.raises(UserError, match="3-channel images but the dataset has 1 channel"):
        run(tiny_cfg("task=linear_eval", "model=from_backbone", f"backbone={backbone}", "dataset.channels=1",
                     f"run_dir={tmp_path / 'eval'}"))


def test_follow_up_takes_every_setting_from_the_linear_eval_option(tiny_cfg, tmp_path: Path) -> None:
    assert option_keys("task", "linear_eval") == {"task", "model", "optimizer", "schedule", "batch_size", "epochs"}
    assert option_keys("task", "barlow_twins") == {"task"}
    parent = tiny_cfg("task=barlow_twins", "seed=3")
    sub = follow_up_config(parent, "linear_eval", tmp_path / "p", {"epochs": 2}, "abc")
    validate(sub)
    assert sub.optimizer.lr == 0.3 and sub.batch_size == 256 and sub.epochs == 2 and sub.seed == 3
    assert sub.model.path == str(tmp_path / "p" / "backbone.pt") and sub.run_dir == str(tmp_path / "p" / "linear_eval")
    assert sub.labels == {"follow_up_of": "abc"}
    assert OmegaConf.to_container(sub.dataset) == OmegaConf.to_container(parent.dataset, resolve=True)


def test_torn_jsonl_tail_is_dropped_on_read_and_cut_before_the_next_append(tmp_path: Path) -> None:
    records = RunRecords(tmp_path)
    records.append_jsonl(records.metrics, [{"epoch": 1}, {"epoch": 2}])
    with records.metrics.open("ab") as f:
        f.write(b'{"epoch": 3, "train_lo')  # killed mid-write
    assert read_jsonl(records.metrics) == [{"epoch": 1}, {"epoch": 2}]
    records.append_jsonl(records.metrics, [{"epoch": 3}])
    assert records.metrics.read_text().splitlines() == ['{"epoch": 1}', '{"epoch": 2}', '{"epoch": 3}']


def test_resume_after_a_torn_metrics_line_and_stale_temp_files(tiny_cfg, tmp_path: Path) -> None:
    straight = run(tiny_cfg("epochs=3", f"run_dir={tmp_path / 'straight'}"))
    run(tiny_cfg("epochs=3"))
    run_dir = tmp_path / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "running"}))  # as if killed
    with (run_dir / "metrics.jsonl").open("ab") as f:
        f.write(b'{"epoch": 4, "tr')
    (run_dir / ".checkpoint.pt.abc.tmp").write_bytes(b"half a checkpoint")
    resumed = run(tiny_cfg("epochs=3"))
    assert resumed["status"] == "completed" and resumed["final_test_top1"] == straight["final_test_top1"]
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert not list(run_dir.glob(".*.tmp"))


def test_unreadable_summary_without_checkpoint_is_moved_aside(tiny_cfg, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_bytes(b"\xff\xfe\x00binary")
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n' * 6)
    with caplog.at_level("WARNING", logger="tvlars"):
        summary = run(tiny_cfg("epochs=1"))
    assert summary["status"] == "completed"
    [aside] = tmp_path.glob("run.unreadable-*")
    assert (aside / "summary.json").read_bytes() == b"\xff\xfe\x00binary"
    assert len(read_jsonl(aside / "metrics.jsonl")) == 6
    assert str(aside) in caplog.text


@pytest.mark.parametrize("evidence", ["config.yaml", "checkpoint"])
def test_unreadable_summary_of_another_experiment_is_refused(evidence: str, tiny_cfg, tmp_path: Path) -> None:
    """Without a readable summary.json, the directory's config.yaml (else its checkpoint) says whose records these
    are; another seed's are refused, also by a run that would not read the checkpoint."""
    run(tiny_cfg("seed=0"))
    run_dir = tmp_path / "run"
    (run_dir / "summary.json").write_bytes(b"\xff\xfe\x00binary")
    if evidence == "checkpoint":
        (run_dir / "config.yaml").unlink()
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(UserError, match=f"{run_dir} holds a different run"):
        run(tiny_cfg("seed=1", "checkpoint_every=0"))
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_a_full_disk_at_checkpoint_time_is_one_line_and_the_run_resumes_once_there_is_space(
        tiny_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second checkpoint finds the disk full (ENOSPC when its bytes are flushed, as NFS reports it): one line
    names the file and the space it needs, the first checkpoint stays, and the rerun ends as an uninterrupted run."""
    straight = run(tiny_cfg("epochs=3", f"run_dir={tmp_path / 'straight'}"))
    fsync, checkpoints = os.fsync, []

    def full_at_the_second_checkpoint(fd: int) -> None:
        if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            checkpoints.append(fd)
            if len(checkpoints) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    run_dir = tmp_path / "run"
    monkeypatch.setattr(os, "fsync", full_at_the_second_checkpoint)
    with pytest.raises(UserError) as error:
        run(tiny_cfg("epochs=3"))
    monkeypatch.undo()
    message = str(error.value)
    match = re.fullmatch(rf"no space left to write {run_dir / 'checkpoint.pt'} \(No space left on device\): it needs "
                         r"([\d.]+) MB, [\d.]+ MB are free there; free space, then rerun the same command to resume "
                         "from the last checkpoint", message)
    assert match, message
    kept = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert kept["train_state"]["epoch"] == 1 and not list(run_dir.glob(".*.tmp"))
    assert float(match.group(1)) == pytest.approx((run_dir / "checkpoint.pt").stat().st_size / 1e6, abs=0.05)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    resumed = run(tiny_cfg("epochs=3"))
    assert resumed["status"] == "completed" and resumed["final_test_top1"] == straight["final_test_top1"]
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (a device that is always full)")
def test_a_full_disk_while_appending_a_log_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^no space left to write /dev/full \(No space left on device\): it needs "
                                        r"0\.0 MB, "):
        RunRecords(tmp_path).append_jsonl(Path("/dev/full"), [{"epoch": 1}])


def test_summary_records_provenance_and_warns_about_other_code(tiny_cfg, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    first = run(tiny_cfg("epochs=1"))
    assert len(first["code_hash"]) == 16 and first["num_classes"] == 10
    assert {"git_commit", "git_dirty", "git_diff_hash"} <= first.keys()
    path = tmp_path / "run" / "summary.json"
    path.write_text(json.dumps({**first, "code_hash": "0" * 16, "world_size": 2}))
    with caplog.at_level("WARNING", logger="tvlars"):
        again = run(tiny_cfg("epochs=1"))
    assert again["code_hash"] == "0" * 16  # the finished run stands
    assert "by different code" in caplog.text and "with 2 process(es)" in caplog.text


def test_progress_lines_name_the_run_and_give_speed_and_eta(tmp_path: Path) -> None:
    result = run_cli(tiny(f"run_dir={tmp_path / 'my-run'}", "log_every=2", "epochs=2"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if " step " in line and "ETA" in line]
    assert len(lines) == 4, result.stderr  # 4 steps per epoch, every 2 steps, 2 epochs
    assert all("my-run epoch" in line and "img/s" in line and "| lr " in line for line in lines)


class RecordingLogger:
    """A logger that remembers the steps it was given (W&B drops a step lower than one already logged)."""

    steps: list[int] = []
    run_id = None

    def __init__(self, run_dir: str | None = None) -> None:
        type(self).steps = []

    def start(self, config: dict, resume_id: str | None) -> None:
        pass

    def log(self, metrics: dict, step: int) -> None:
        type(self).steps.append(step)

    def finish(self, exit_code: int = 0, preempted: bool = False) -> None:
        pass


def test_logger_receives_steps_in_order_with_trust_snapshots(tiny_cfg) -> None:
    cfg = tiny_cfg("optimizer=lars", "log_trust_every=1", "log_every=2", "epochs=2")
    cfg.logger = {"_target_": f"{__name__}.RecordingLogger"}
    run(cfg)
    steps = RecordingLogger.steps
    assert steps == sorted(steps) and 1 in steps and 8 in steps


@pytest.mark.slow
def test_ctrl_c_records_interrupted_exits_130_and_resumes(tmp_path: Path) -> None:
    args = tiny("dataset.num_train=2048", "epochs=4", "batch_size=128", f"run_dir={tmp_path / 'run'}")
    proc = subprocess.Popen([sys.executable, "-m", "tvlars.train", *args], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background shell
    # (CI) starts children with SIGINT ignored; a terminal's Ctrl-C reaches a process that has the default handler
    deadline = time.time() + 120
    while not (tmp_path / "run" / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "error: interrupted" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["error"].startswith("interrupted")
    resumed = run_cli(args)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr


LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
             "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_failing_job_does_not_stop_the_multirun(launcher: str, tmp_path: Path) -> None:
    """Four jobs, two of which need data that is missing: the other two complete, the two failures are recorded,
    with every launcher."""
    args = [o for o in tiny(f"out_dir={tmp_path / 'runs'}", "epochs=1") if not o.startswith("dataset")]
    result = run_cli(["--multirun", *args, "dataset=cifar10,synthetic", "seed=0,1", *LAUNCHERS[launcher],
                      f"data_root={tmp_path / 'none'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/summary.json")]
    assert sorted(s["status"] for s in summaries) == ["completed", "completed", "failed", "failed"]
    for failed in (s for s in summaries if s["status"] == "failed"):
        assert failed["error"].startswith("CIFAR-10 not found") and failed["config"]["labels"] == {}
    if launcher != "submitit_local":  # submitit keeps each job's output in its own log file
        assert result.stderr.count("error: CIFAR-10 not found") == 2


@pytest.mark.parametrize(("task", "recorded"), [("0", True), ("1", False)])
def test_only_rank_0_of_a_slurm_job_records_a_failure(task: str, recorded: bool, tmp_path: Path) -> None:
    """SLURM gives the rank (SLURM_PROCID); the rendezvous exports it as RANK, which must happen before the CLI reads
    it to decide who logs and who writes the failure record."""
    env = {**cli_env(), "SLURM_NTASKS": "2", "SLURM_PROCID": task, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    env.pop("RANK", None)
    result = subprocess.run([sys.executable, "-m", "tvlars.train", "--multirun", *tiny("optimizer.lr=-1"),
                             f"run_dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "error: optimizer.lr must be >= 0" in result.stderr, result.stderr[-2000:]
    assert (tmp_path / "run" / "summary.json").exists() == recorded


@pytest.mark.parametrize(("tty", "columns", "expected"), [(True, 120, "bar"), (True, 0, "lines"), (True, 20, "lines"),
                                                            (False, 120, "lines")])
def test_auto_progress_draws_a_bar_only_on_a_real_terminal(tty: bool, columns: int, expected: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A zero-width terminal (some schedulers give one) gets plain lines, not an invisible bar."""
    import os
    import sys

    from tvlars.engine import progress_mode

    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    monkeypatch.setattr(sys.stderr, "fileno", lambda: 2, raising=False)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((columns, 0)))
    assert progress_mode("auto") == expected
    assert progress_mode("bar") == "bar" and progress_mode("lines") == "lines"


@pytest.mark.slow
def test_image_folder_decoding_on_the_device_path_under_the_joblib_launcher(tmp_path: Path) -> None:
    """The device path decodes an image-folder export in DataLoader workers; inside a joblib (loky) job they must
    fork, or every job fails (`'Process' object has no attribute 'env'`)."""
    from tvlars.data.cifar import write_fake_cifar10

    write_fake_cifar10(tmp_path / "data", n_train=40, n_test=20, format="imagefolder")
    args = [o for o in tiny(f"out_dir={tmp_path / 'runs'}", "epochs=1") if not o.startswith("dataset")]
    result = run_cli(["--multirun", *args, "dataset=cifar10", "dataset.format=imagefolder", "dataset.val_size=8",
                      "batch_size=8", "eval_batch_size=8", "data.on_device=true", "num_workers=1", "seed=0,1",
                      f"data_root={tmp_path / 'data'}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                      f"hydra.sweep.dir={tmp_path / 'multirun'}"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = [json.loads(p.read_text())["status"] for p in (tmp_path / "runs").glob("*/summary.json")]
    assert statuses == ["completed", "completed"], result.stderr[-3000:]
