"""Two gloo processes under torchrun train exactly like one process on the same global batch."""

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


def test_two_processes_match_one(tmp_path: Path) -> None:
    single = run_cli([*ARGS, f"run_dir={tmp_path / 'one'}"])
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tvlars.train",
         *ARGS, f"run_dir={tmp_path / 'two'}"], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
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
