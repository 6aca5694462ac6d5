"""A run killed with SIGKILL after a checkpoint resumes and ends exactly like an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, cli_env, run_cli, tiny
from tvlars.records import read_jsonl

pytestmark = pytest.mark.slow

# With random crops and flips: their draws must repeat after a resume, on either data path.
ARGS = tiny("dataset.num_train=2048", "epochs=4", "batch_size=128", "checkpoint_every=1",
            "dataset.augment.crop_padding=2", "dataset.augment.hflip=true")


def _metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k}
            for r in read_jsonl(run_dir / "metrics.jsonl")]


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
