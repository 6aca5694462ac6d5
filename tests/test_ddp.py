"""Two gloo processes under torchrun train exactly like one process on the same global batch; what a process group
refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, cli_env, run_cli, tiny

pytestmark = pytest.mark.slow

# An MLP has no batch statistics, and no augmentation: the only difference left is how work is split.
ARGS = tiny("model=mlp", "model.hidden=[32]", "epochs=1", "batch_size=64", "eval_batch_size=64",
            "optimizer=sgd", "optimizer.lr=0.05")


def torchrun(args: list[str], processes: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", "-m", "tvlars.train", *args], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=300)


def test_two_processes_match_one(tmp_path: Path) -> None:
    single = run_cli([*ARGS, f"run_dir={tmp_path / 'one'}"])
    assert single.returncode == 0, single.stderr
    double = torchrun([*ARGS, f"run_dir={tmp_path / 'two'}"], processes=2)
    assert double.returncode == 0, double.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)
    assert one["train_state"]["step"] == two["train_state"]["step"] == 4
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, rtol=1e-5, atol=1e-5, msg=name)
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert s2["world_size"] == 2
    # evaluation covers the whole test set on both, reduced across ranks
    assert s1["final_test_top1"] == pytest.approx(s2["final_test_top1"], abs=1e-6)
    assert s1["final_test_loss"] == pytest.approx(s2["final_test_loss"], rel=1e-4)


def test_a_closure_optimizer_is_refused_under_a_one_process_torchrun(tmp_path: Path) -> None:
    """CDAT's backward(create_graph=True) cannot go through DDP, which every torchrun launch uses (one process
    too): one error line before training, instead of a crash in the first step."""
    done = torchrun(tiny("optimizer=cdat", "epochs=1", f"run_dir={tmp_path}"), processes=1)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "differentiates through the loss twice" in errors[0], done.stderr[-3000:]
    # torchrun's own traceback reports the failed child; none passes through tvlars
    assert not [line for line in done.stderr.splitlines() if "File " in line and "tvlars" in line]
    assert not (tmp_path / "metrics.jsonl").exists()
