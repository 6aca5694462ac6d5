"""One writer per run directory: a second process is refused while the first runs, stale locks are taken over, a
sweep skips a run another process holds, DDP ranks stop with rank 0, and a holder whose lock was taken writes no
more."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, cli_env, foreign_lock, run_cli, tiny
from tvlars import lock as lock_module
from tvlars.lock import LOCK_NAME, STALE_AFTER_S, DirLock, Locked
from tvlars.records import RunRecords, read_jsonl
from tvlars.run import run


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_a_second_process_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # 6 epochs of 64 steps: long enough to outlast the second process's start on a busy machine
    args = tiny("dataset.num_train=8192", "epochs=6", "batch_size=128", f"run_dir={run_dir}")
    first = subprocess.Popen([sys.executable, "-m", "tvlars.train", *args], cwd=ROOT, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "summary.json").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = run_cli(args)
    assert first.poll() is None, "the first run ended before the second started; make it longer"
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2, second.stderr[-2000:]
    [line] = second.stderr.strip().splitlines()
    assert line.startswith(f"error: run directory {run_dir} is in use by pid {first.pid} on {socket.gethostname()}")
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert not (run_dir / LOCK_NAME).exists()


@pytest.mark.parametrize(("host", "dead", "age_s"), [("this", True, 0.0), ("elsewhere", False, STALE_AFTER_S + 60)],
                         ids=["dead pid on this host", "no heartbeat for too long"])
def test_a_stale_lock_is_taken_over(host: str, dead: bool, age_s: float, tiny_cfg, tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    hostname = socket.gethostname() if host == "this" else "node-17"
    foreign_lock(tmp_path / "run", hostname, _dead_pid() if dead else 4242, age_s)
    with caplog.at_level("WARNING", logger="tvlars"):
        assert run(tiny_cfg("epochs=1"))["status"] == "completed"
    assert "taking over the stale lock" in caplog.text
    assert not (tmp_path / "run" / LOCK_NAME).exists()


@pytest.mark.parametrize(("host", "pid"), [("elsewhere", 4242), ("this", os.getppid())],
                         ids=["fresh heartbeat elsewhere", "live pid on this host"])
def test_a_live_lock_refuses_the_run_before_anything_is_written(host: str, pid: int, tiny_cfg,
                                                                tmp_path: Path) -> None:
    hostname = socket.gethostname() if host == "this" else "node-17"
    lock = foreign_lock(tmp_path / "run", hostname, pid, age_s=STALE_AFTER_S - 60)
    with pytest.raises(Locked, match=f"run directory {tmp_path / 'run'} is in use by pid {pid} on {hostname}"):
        run(tiny_cfg("epochs=1"))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_NAME]
    assert json.loads(lock.read_text())["token"] == "theirs"


def test_a_released_lock_removes_its_file_and_the_directory_it_created_for_nothing(tmp_path: Path) -> None:
    with DirLock(tmp_path / "a" / "b") as held:
        assert held.path.exists()
    assert not held.path.exists() and not (tmp_path / "a" / "b").exists()  # created for nothing: removed


def test_the_heartbeat_refreshes_the_lock_and_notices_a_takeover(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(lock_module, "HEARTBEAT_S", 0.05)
    records = RunRecords(tmp_path / "run")
    with records.locked():
        held = records.held
        assert held is not None
        os.utime(held.path, (0, 0))
        deadline = time.time() + 10
        while held.path.stat().st_mtime == 0 and time.time() < deadline:
            time.sleep(0.01)
        assert time.time() - held.path.stat().st_mtime < 5
        records.append_jsonl(records.metrics, [{"epoch": 1}])
        foreign_lock(records.dir, "node-17", 4242)  # taken over while this process was, say, suspended
        while held.lost_to is None and time.time() < deadline:
            time.sleep(0.01)
        with pytest.raises(Locked, match="was taken over by pid 4242 on node-17"):
            records.append_jsonl(records.metrics, [{"epoch": 2}])
        with pytest.raises(Locked):
            records.write_summary({"status": "failed"})
    assert json.loads(held.path.read_text())["token"] == "theirs"  # the new holder's lock stays
    assert read_jsonl(records.metrics) == [{"epoch": 1}]


@pytest.mark.slow
def test_a_sweep_skips_a_run_another_process_holds_and_goes_on(tmp_path: Path) -> None:
    held, free = tmp_path / "held", tmp_path / "free"
    foreign_lock(held, "node-17", 4242)
    result = run_cli(["--multirun", *tiny("epochs=1"), f"run_dir={held},{free}",
                      f"hydra.sweep.dir={tmp_path / 'multirun'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"warning: skipping this job: run directory {held} is in use by pid 4242 on node-17" in result.stderr
    assert json.loads((free / "summary.json").read_text())["status"] == "completed"
    assert sorted(p.name for p in held.iterdir()) == [LOCK_NAME]  # no failure recorded over the holder's run


@pytest.mark.slow
def test_no_ddp_rank_goes_on_when_rank_0_cannot_take_the_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    foreign_lock(run_dir, "node-17", 4242)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tvlars.train",
         *tiny("model=mlp", "model.hidden=[32]", "epochs=1"), f"run_dir={run_dir}"],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"error: run directory {run_dir} is in use by pid 4242 on node-17" in result.stderr
    assert f"error: rank 0 could not take the lock of run directory {run_dir}" in result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]


def test_a_lock_that_cannot_be_written_leaves_no_empty_lock_behind(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """The lock file is created, but its holder cannot be written into it (a full disk): it must go, or it would
    refuse every process for STALE_AFTER_S."""
    real_fdopen = os.fdopen

    class FullFile:
        def __init__(self, fd: int, mode: str) -> None:
            self.file = real_fdopen(fd, mode)

        def __enter__(self) -> FullFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lock_module.os, "fdopen", FullFile)
    with pytest.raises(OSError, match="No space left"):
        DirLock(tmp_path / "run").acquire()
    monkeypatch.undo()
    assert not (tmp_path / "run").exists()
