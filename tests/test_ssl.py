"""Self-supervised tasks: losses against naive references, their distributed equivalence, the two-phase run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tvlars.data import classification_transforms, load_synthetic
from tvlars.data.ssl_transforms import two_view_transform
from tvlars.errors import UserError
from tvlars.models import ResNet
from tvlars.run import run
from tvlars.tasks.linear_eval import extract_features
from tvlars.tasks.ssl import barlow_twins_loss, nt_xent_loss

SSL_TINY = ["task.projector_dims=[32,16]", "task.linear_eval.epochs=2", "task.linear_eval.batch_size=64",
            "epochs=2"]


def naive_barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    n, d = z1.shape
    a = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
    b = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
    loss = torch.zeros(())
    for i in range(d):
        for j in range(d):
            c = (a[:, i] * b[:, j]).sum() / n
            loss = loss + ((1 - c) ** 2 if i == j else lambd * c**2)
    return loss


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n2 = z.shape[0]
    total = torch.zeros(())
    for i in range(n2):
        partner = (i + n2 // 2) % n2
        sims = torch.stack([z[i] @ z[k] / t for k in range(n2) if k != i])
        total = total - (z[i] @ z[partner] / t - torch.logsumexp(sims, 0))
    return total / n2


def test_losses_match_naive_definitions() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    torch.testing.assert_close(barlow_twins_loss(z1, z2, 0.005), naive_barlow_twins(z1, z2, 0.005))
    torch.testing.assert_close(nt_xent_loss(z1, z2, 0.5), naive_nt_xent(z1, z2, 0.5))
    assert barlow_twins_loss(z1, z1, 0.0) < 1e-3  # identical views, on-diagonal term only → C_ii = 1


def _distributed_worker(rank: int, world: int, port: int, z1: torch.Tensor, z2: torch.Tensor, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    local = slice(rank * len(z1) // world, (rank + 1) * len(z1) // world)
    for name, fn in (("bt", lambda a, b: barlow_twins_loss(a, b, 0.005)), ("nt", lambda a, b: nt_xent_loss(a, b, 0.5))):
        a, b = z1[local].clone().requires_grad_(), z2[local].clone().requires_grad_()
        loss = fn(a, b)
        loss.backward()
        # DDP averages gradients over ranks: that is the gradient a parameter upstream of z would see
        out[(name, rank)] = (loss.detach(), a.grad / world, b.grad / world)
    dist.destroy_process_group()


def test_distributed_losses_and_gradients_equal_single_process() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(16, 6, generator=g), torch.randn(16, 6, generator=g)
    manager = mp.Manager()
    out = manager.dict()
    port = 29500 + os.getpid() % 1000
    mp.spawn(_distributed_worker, args=(2, port, z1, z2, out), nprocs=2, join=True)
    for name, fn in (("bt", lambda a, b: barlow_twins_loss(a, b, 0.005)), ("nt", lambda a, b: nt_xent_loss(a, b, 0.5))):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        loss = fn(a, b)
        loss.backward()
        for rank in range(2):
            local = slice(rank * 8, (rank + 1) * 8)
            d_loss, d_ga, d_gb = out[(name, rank)]
            torch.testing.assert_close(d_loss, loss.detach(), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(d_ga, a.grad[local], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(d_gb, b.grad[local], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["barlow_twins", "simclr"])
def test_two_view_transforms_shapes_and_randomness(method: str) -> None:
    data = load_synthetic(num_train=4, num_test=4, channels=3, image_size=16)
    views = two_view_transform(data.info, method)
    img = data.train[0][0]
    v1, v2 = views(img)
    assert v1.shape == v2.shape == (3, 16, 16) and v1.dtype == torch.float32
    assert not torch.equal(v1, v2)
    gray = load_synthetic(num_train=4, num_test=4, channels=1, image_size=16)
    g1, _ = two_view_transform(gray.info, method)(gray.train[0][0])
    assert g1.shape == (1, 16, 16)


@pytest.mark.parametrize("task", ["barlow_twins", "simclr"])
def test_pretraining_then_linear_eval(task: str, tiny_cfg, tmp_path: Path) -> None:
    summary = run(tiny_cfg(f"task={task}", *SSL_TINY))
    run_dir = tmp_path / "run"
    assert summary["status"] == "completed"
    assert (run_dir / "backbone.pt").exists()
    offline = json.loads((run_dir / "linear_eval" / "summary.json").read_text())
    assert offline["status"] == "completed" and offline["epochs_completed"] == 2
    assert summary["final_test_top1"] == offline["final_test_top1"]
    assert summary["linear_eval"]["status"] == "completed"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"train_loss", "train_probe_top1", "test_probe_top1", "test_probe_top5"} <= rows[0].keys()
    assert "test_top1" not in rows[0]  # the online probe is a monitor, never the table's number


def test_killed_during_linear_eval_resumes_there(tiny_cfg, tmp_path: Path) -> None:
    first = run(tiny_cfg("task=barlow_twins", *SSL_TINY))
    run_dir = tmp_path / "run"
    # as if killed during linear evaluation: pre-training finished, its summary still says "running"
    (run_dir / "summary.json").write_text(json.dumps({**first, "status": "running"}))
    (run_dir / "linear_eval" / "summary.json").write_text(json.dumps({**json.loads(
        (run_dir / "linear_eval" / "summary.json").read_text()), "status": "running"}))
    pretrain_rows = (run_dir / "metrics.jsonl").read_text()
    second = run(tiny_cfg("task=barlow_twins", *SSL_TINY))
    assert second["status"] == "completed"
    assert (run_dir / "metrics.jsonl").read_text() == pretrain_rows  # pre-training was not repeated
    assert second["final_test_top1"] == first["final_test_top1"]


def test_standalone_linear_eval_of_a_saved_backbone(tiny_cfg, tmp_path: Path) -> None:
    run(tiny_cfg("task=simclr", *SSL_TINY))
    backbone = tmp_path / "run" / "backbone.pt"
    summary = run(tiny_cfg("task=linear_eval", "model=from_backbone", f"backbone={backbone}", "epochs=2",
                           f"run_dir={tmp_path / 'eval'}"))
    assert summary["status"] == "completed" and summary["config"]["optimizer"]["lr"] == 0.3
    with pytest.raises(UserError, match="backbone checkpoint .* not found"):
        run(tiny_cfg("task=linear_eval", "model=from_backbone", f"backbone={tmp_path / 'missing.pt'}",
                     f"run_dir={tmp_path / 'x'}"))


def test_feature_extraction_equals_the_per_sample_evaluation_transform() -> None:
    data = load_synthetic(num_train=40, num_test=8, channels=3, image_size=16)
    backbone = ResNet(depth=18, width=0.0625, num_classes=10, in_channels=3).eval()
    features = extract_features(backbone, data.train, data.info, torch.device("cpu"), batch_size=16)
    _, deterministic = classification_transforms(data.info)
    with torch.no_grad():
        expected = backbone.features(torch.stack([deterministic(data.train[i][0]) for i in range(40)]))
    torch.testing.assert_close(features.tensors[0], expected, atol=1e-5, rtol=1e-4)
    assert features.tensors[1].tolist() == [data.train[i][1] for i in range(40)]
