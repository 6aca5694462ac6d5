"""Self-supervised pre-training: Barlow Twins and SimCLR, each with an online linear probe as a monitor.

The optimizer under test trains the backbone and the projector (``model.encoder``). A linear probe on
detached backbone features is trained alongside by its own SGD, so every epoch reports a probe accuracy;
that number is a monitor only. Tables use the offline linear evaluation that follows pre-training
(:mod:`tvlars.tasks.linear_eval`).

Losses are computed on the **global** batch: embeddings are gathered from every process with an
autograd-aware all-gather (:func:`tvlars.distributed.gather`), so the loss equals the single-process loss on the
same global batch. The gather's backward sums each process's gradient over ranks (×world size) and DDP's gradient
averaging divides it back, so gradients equal the single-process ones too. (lightly's losses normalise Barlow
Twins embeddings per process, which is not the paper code's SyncBatchNorm-normalised global batch; hence our own
reduction.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from tvlars.data import DataBundle, DatasetInfo, TransformedDataset, classification_transforms
from tvlars.data.batch_transforms import BatchNormalize, batch_two_view_transform
from tvlars.data.ssl_transforms import two_view_transform
from tvlars.distributed import gather
from tvlars.tasks.base import BatchTransforms, Sums, Task
from tvlars.tasks.classification import topk_correct


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float) -> Tensor:
    """``Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²`` with ``C`` the cross-correlation of the batch-normalised
    embeddings of the global batch, divided by the global batch size (Zbontar et al. 2021).

    Computed in float32 even under bf16 autocast: late in training ``1 − C_ii`` is ~1e-3, below bf16's resolution
    near 1 (~4e-3), and a bf16 matrix product would round it away."""
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = gather(z1.float()), gather(z2.float())
        n = z1.shape[0]
        z1 = F.batch_norm(z1, None, None, training=True)
        z2 = F.batch_norm(z2, None, None, training=True)
        c = z1.T @ z2 / n
        diag = torch.diagonal(c)
        on_diag = (diag - 1).pow(2).sum()
        off_diag = c.pow(2).sum() - diag.pow(2).sum()
        return on_diag + lambd * off_diag


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent over the global batch: each of the 2N embeddings must pick its partner among the
    other 2N − 1 by cosine similarity / temperature (Chen et al. 2020); mean over the 2N anchors. Float32 even
    under bf16 autocast (as :func:`barlow_twins_loss`)."""
    with torch.autocast(z1.device.type, enabled=False):
        z = F.normalize(torch.cat([gather(z1.float()), gather(z2.float())]), dim=1)
        n = z.shape[0] // 2
        logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))  # an anchor is not its own partner
        partner = torch.arange(2 * n, device=z.device).roll(n)  # i ↔ i + n
        return F.cross_entropy(logits, partner)


class SSLModel(nn.Module):
    """``encoder`` = backbone (its classifier removed) + projector; ``probe`` = linear head on detached features."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, num_classes: int) -> None:
        super().__init__()
        backbone.fc = nn.Identity()
        self.encoder = nn.ModuleDict({"backbone": backbone, "projector": projector})
        self.probe = nn.Linear(backbone.num_features, num_classes)

    def forward(self, v1: Tensor, v2: Tensor | None = None) -> Any:
        """Probe logits for one batch; ``(z1, z2, probe logits of view 1)`` for two views."""
        f1 = self.encoder["backbone"].features(v1)
        logits = self.probe(f1.detach())
        if v2 is None:
            return logits
        projector = self.encoder["projector"]
        return projector(f1), projector(self.encoder["backbone"].features(v2)), logits


class SelfSupervised(Task):
    """Shared pre-training step; subclasses choose the views, the projector and the loss. Followed by the
    offline linear evaluation of the backbone (``tvlars/configs/task/linear_eval.yaml``; ``linear_eval`` holds the
    top-level values in which the follow-up differs from that file, e.g. ``{epochs: 2}``; ``None`` keeps it)."""

    method = ""
    metrics = ("train_loss", "train_probe_top1", "test_probe_top1", "test_probe_top5")
    views = 2
    follow_up = "linear_eval"

    def __init__(self, linear_eval: dict[str, Any], probe_lr: float = 0.1, min_scale: float = 0.08) -> None:
        self.linear_eval = {k: v for k, v in dict(linear_eval).items() if v is not None}
        self.probe_lr, self.min_scale = probe_lr, min_scale
        self.probe_optimizer: torch.optim.Optimizer | None = None

    def projector(self, in_dim: int) -> nn.Module:
        raise NotImplementedError

    def loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        raise NotImplementedError

    def datasets(self, data: DataBundle, augment: dict[str, Any]) -> tuple[Dataset, Dataset]:
        _, test_tf = classification_transforms(data.info, **augment)
        views = two_view_transform(data.info, self.method, min_scale=self.min_scale)
        return TransformedDataset(data.train, views), TransformedDataset(data.test, test_tf)

    def batch_transforms(self, info: DatasetInfo, augment: dict[str, Any]) -> BatchTransforms | None:
        return batch_two_view_transform(info, self.method, min_scale=self.min_scale), BatchNormalize(info)

    def build_model(self, backbone: nn.Module, info: DatasetInfo) -> nn.Module:
        model = SSLModel(backbone, self.projector(backbone.num_features), info.num_classes)
        self.probe_optimizer = torch.optim.SGD(model.probe.parameters(), lr=self.probe_lr, momentum=0.9)
        return model

    def optimized_module(self, model: nn.Module) -> nn.Module:
        return model.encoder

    def exported_module(self, model: nn.Module) -> nn.Module:
        return model.encoder["backbone"]

    def follow_up_settings(self) -> dict[str, Any]:
        return dict(self.linear_eval)

    def training_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, Sums]:
        (v1, v2), y = batch
        z1, z2, logits = model(v1, v2)
        ssl_loss = self.loss(z1, z2)
        probe_loss = F.cross_entropy(logits.float(), y)  # reaches the probe only: its input is detached
        n = y.shape[0]
        with torch.no_grad():
            top1 = topk_correct(logits, y, 1) * 100.0
        return ssl_loss + probe_loss, {"loss": ssl_loss.detach() * n, "probe_top1": top1, "count": n}

    def after_step(self) -> None:
        assert self.probe_optimizer is not None
        self.probe_optimizer.step()
        self.probe_optimizer.zero_grad(set_to_none=True)

    def eval_step(self, model: nn.Module, batch: Any) -> Sums:
        x, y = batch
        logits = model(x)
        return {"probe_top1": topk_correct(logits, y, 1) * 100.0, "probe_top5": topk_correct(logits, y, 5) * 100.0,
                "count": y.shape[0]}

    def state_dict(self) -> dict[str, Any]:
        return {"probe_optimizer": self.probe_optimizer.state_dict()} if self.probe_optimizer else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.probe_optimizer and "probe_optimizer" in state:
            self.probe_optimizer.load_state_dict(state["probe_optimizer"])


class BarlowTwins(SelfSupervised):
    """Barlow Twins (Zbontar et al. 2021) with the paper code's 3-layer projector (512-4096-4096-4096)."""

    method = "barlow_twins"

    def __init__(self, linear_eval: dict[str, Any], projector_dims: tuple[int, int] = (4096, 4096),
                 lambd: float = 0.005, probe_lr: float = 0.1, min_scale: float = 0.08) -> None:
        super().__init__(linear_eval, probe_lr, min_scale)
        if lambd < 0:
            raise ValueError(f"task.lambd must be >= 0 (got {lambd})")
        self.hidden, self.out = projector_dims
        self.lambd = lambd

    def projector(self, in_dim: int) -> nn.Module:
        from lightly.models.modules.heads import BarlowTwinsProjectionHead  # ~1 s import: only when needed

        return BarlowTwinsProjectionHead(in_dim, self.hidden, self.out)

    def loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, self.lambd)


class SimCLR(SelfSupervised):
    """SimCLR (Chen et al. 2020): 2-layer projection head, NT-Xent with negatives from the global batch."""

    method = "simclr"

    def __init__(self, linear_eval: dict[str, Any], projector_dims: tuple[int, int] = (2048, 128),
                 temperature: float = 0.5, probe_lr: float = 0.1, min_scale: float = 0.08) -> None:
        super().__init__(linear_eval, probe_lr, min_scale)
        if temperature <= 0:
            raise ValueError(f"task.temperature must be > 0 (got {temperature})")
        self.hidden, self.out = projector_dims
        self.temperature = temperature

    def projector(self, in_dim: int) -> nn.Module:
        from lightly.models.modules.heads import SimCLRProjectionHead  # ~1 s import: only when needed

        return SimCLRProjectionHead(in_dim, self.hidden, self.out)

    def loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent_loss(z1, z2, self.temperature)
