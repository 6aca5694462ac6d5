"""On real Fashion-MNIST, Barlow Twins pre-training gives features a linear probe uses better than random ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import compose_config
from tvlars.engine import seed_all
from tvlars.models import ResNet
from tvlars.run import run
from tvlars.tasks.linear_eval import save_backbone

pytestmark = pytest.mark.slow

DATA = ["dataset=fashion_mnist", "train_subset=4096", "test_subset=2000", "logger=none", "progress=lines"]
MODEL = {"_target_": "tvlars.models.ResNet", "depth": 18, "stem": "cifar", "width": 0.125}


def test_pretrained_backbone_beats_a_random_frozen_one(tmp_path: Path) -> None:
    pretrained = run(compose_config([
        *DATA, "task=barlow_twins", "task.projector_dims=[256,128]", "model.width=0.125", "epochs=4",
        "batch_size=256", "optimizer=sgd", "optimizer.lr=0.1", "task.linear_eval.epochs=30",
        f"run_dir={tmp_path / 'bt'}"]))
    seed_all(0)
    random_init = ResNet(18, 10, 1, "cifar", 0.125)
    save_backbone(tmp_path / "random.pt", random_init, MODEL, {"num_classes": 10, "in_channels": 1})
    random = run(compose_config([*DATA, "task=linear_eval", f"backbone={tmp_path / 'random.pt'}", "epochs=30",
                                 f"run_dir={tmp_path / 'random'}"]))
    assert pretrained["status"] == random["status"] == "completed"
    # 2000 test images: 3 points is several standard errors of either accuracy
    assert pretrained["final_test_top1"] > random["final_test_top1"] + 3.0, (pretrained["final_test_top1"],
                                                                             random["final_test_top1"])
