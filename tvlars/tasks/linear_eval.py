"""Offline linear evaluation of a frozen backbone (the number that goes into SSL tables).

Done right, unlike the released code: the backbone is frozen **and in eval mode**, features come from the
deterministic test transform, the whole test set is scored, and the classifier (N(0, 0.01) weights, zero bias)
is trained with SGD + cosine by the ordinary engine. Features are computed once, so 100 epochs of linear
evaluation cost about one pass of the backbone over the data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from tvlars.config import instantiate_node
from tvlars.data import DataBundle, DatasetInfo, TransformedDataset, classification_transforms
from tvlars.data.batch_transforms import BatchNormalize
from tvlars.data.loaders import in_memory
from tvlars.data.transforms import LARGE_IMAGE_SIZE
from tvlars.errors import UserError
from tvlars.tasks.base import BatchTransforms
from tvlars.tasks.classification import Classification

log = logging.getLogger("tvlars")


def save_backbone(path: Path, backbone: nn.Module, model_cfg: dict[str, Any], model_kwargs: dict[str, Any]) -> None:
    """Write ``backbone.pt``: the model config (with ``_target_``), its build kwargs and the weights."""
    state = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    torch.save({"model": model_cfg, "model_kwargs": model_kwargs, "state_dict": state}, path)


def load_backbone(path: str | Path | None, in_channels: int | None = None, device: Any = "cpu") -> nn.Module:
    """The backbone saved by :func:`save_backbone`, frozen, in eval mode, classifier removed, on ``device``.

    The target of ``model=from_backbone`` (which ``task=linear_eval`` selects): the architecture is the saved one,
    so no ``model.*`` key applies. ``in_channels`` (the dataset's) must match the backbone's input channels.
    """
    if not path:
        raise UserError("task=linear_eval needs backbone=<path to backbone.pt> (written by an SSL pre-training run)")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"backbone checkpoint {path} not found; pass backbone=<run dir>/backbone.pt of a "
                        "finished pre-training run")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        saved_channels = saved["model_kwargs"].get("in_channels")
        if in_channels is not None and saved_channels is not None and saved_channels != in_channels:
            raise UserError(f"backbone {path} takes {saved_channels}-channel images but the dataset has "
                            f"{in_channels} channel(s); evaluate it on the dataset it was pre-trained on")
        backbone = instantiate_node(OmegaConf.create(saved["model"]), "model", **saved["model_kwargs"])
        backbone.fc = nn.Identity()
        backbone.load_state_dict(saved["state_dict"])
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is not a usable backbone
        raise UserError(f"backbone checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc})") from None
    backbone.requires_grad_(False)
    return backbone.to(torch.device(device)).eval()


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset: Dataset, info: DatasetInfo, device: torch.device,
                     batch_size: int = 512) -> TensorDataset:
    """Frozen features of every image under the deterministic evaluation transform: images below
    ``LARGE_IMAGE_SIZE`` are decoded once and normalised batched on ``device``; larger ones go through the
    per-sample transform (resize, centre crop)."""
    if info.image_size < LARGE_IMAGE_SIZE:
        images, labels = in_memory(dataset, desc="features")
        normalize = BatchNormalize(info)
        batches: Iterable[tuple[Tensor, Any]] = (
            (normalize(images[i:i + batch_size].to(device)), labels[i:i + batch_size])
            for i in range(0, len(images), batch_size))
    else:
        _, deterministic = classification_transforms(info)
        batches = DataLoader(TransformedDataset(dataset, deterministic), batch_size=batch_size)
    feats, targets = [], []
    for x, y in batches:
        feats.append(backbone.features(x.to(device)).float().cpu())
        targets.append(torch.as_tensor(y))
    return TensorDataset(torch.cat(feats), torch.cat(targets))


def check_features(features: Tensor, split: str) -> None:
    """Warn (one line) when frozen features are non-finite or absurdly large: a broken pre-training would
    otherwise end in a 'completed' linear evaluation at chance level."""
    finite = torch.isfinite(features)
    if not finite.all():
        log.warning("warning: %.1f %% of the %s features are not finite: the backbone is broken (diverged "
                    "pre-training?); the linear evaluation will be at chance level", 100 * (~finite).float().mean(),
                    split)
    elif features.abs().max() > 1e4:
        log.warning("warning: %s features reach |x| = %.3g: the linear evaluation may diverge or sit at chance "
                    "level", split, features.abs().max())


class LinearEval(Classification):
    """Linear classifier on frozen features of the backbone that ``model=from_backbone`` loads."""

    required_model = f"{__name__}.load_backbone"  # the saved architecture: no other model applies

    def __init__(self, device: Any = "cpu") -> None:
        super().__init__(label_smoothing=0.0)
        self.device = torch.device(device)

    def prepare(self, data: DataBundle, backbone: nn.Module) -> DataBundle:
        """Replace the images by frozen features (deterministic transform), computed once."""
        splits = {"train": data.train, "test": data.test, **({"val": data.val} if data.val is not None else {})}
        features = {split: extract_features(backbone, dataset, data.info, self.device)
                    for split, dataset in splits.items()}
        for split, dataset in features.items():
            check_features(dataset.tensors[0], split)
        return DataBundle(train=features["train"], test=features["test"], info=data.info, val=features.get("val"))

    def datasets(self, data: DataBundle, augment: dict[str, Any]) -> tuple[Dataset, Dataset]:
        return data.train, data.test

    def batch_transforms(self, info: DatasetInfo, augment: dict[str, Any]) -> BatchTransforms | None:
        return None, None

    def build_model(self, backbone: nn.Module, info: DatasetInfo) -> nn.Module:
        head = nn.Linear(backbone.num_features, info.num_classes)
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        return head
