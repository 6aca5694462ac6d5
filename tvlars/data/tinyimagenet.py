"""Tiny-ImageNet (200 classes, 64×64 RGB) in the standard ``tiny-imagenet-200`` layout; val = test split."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from tvlars.data.base import DataBundle, DatasetInfo
from tvlars.errors import UserError

TINYIMAGENET_DIR = "tiny-imagenet-200"
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_GET_IT = "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into"


class ImageListDataset(Dataset):
    """Items ``(PIL RGB image, label)`` from a list of ``(path, label)``; images open lazily."""

    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples
        self.targets = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            return image.convert("RGB"), label  # some Tiny-ImageNet images are greyscale


def _require(path: Path, root: Path) -> Path:
    if not path.exists():
        raise UserError(f"{path} not found; {_GET_IT} {root}")
    return path


def _train_samples(train_dir: Path, wnids: list[str], root: Path) -> list[tuple[str, int]]:
    samples = []
    for label, wnid in enumerate(wnids):
        images = _require(train_dir / wnid / "images", root)
        names = sorted(e.name for e in os.scandir(images) if e.name.lower().endswith(_IMAGE_SUFFIXES))
        if not names:
            raise UserError(f"{images} holds no images; re-extract tiny-imagenet-200.zip into {root}")
        samples.extend((str(images / name), label) for name in names)
    return samples


def _val_samples(val_dir: Path, class_index: dict[str, int], root: Path) -> list[tuple[str, int]]:
    annotations = _require(val_dir / "val_annotations.txt", root)
    images = _require(val_dir / "images", root)
    samples = []
    for line_no, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_index:
            raise UserError(
                f"{annotations}:{line_no}: expected '<file>\\t<wnid from wnids.txt>\\t...'; re-extract it"
            )
        samples.append((str(images / fields[0]), class_index[fields[1]]))
    if not samples:
        raise UserError(f"{annotations} lists no images; re-extract tiny-imagenet-200.zip into {root}")
    _require(Path(samples[0][0]), root)  # cheap sanity check that annotations and files agree
    return samples


def load_tinyimagenet(root: str) -> DataBundle:
    """Tiny-ImageNet from ``<root>/tiny-imagenet-200`` (class index = position in sorted ``wnids.txt``).

    Builds file lists only (no image is opened); items are ``(PIL RGB 64×64 image, int)``.
    """
    base_root = Path(root).expanduser()
    base = base_root / TINYIMAGENET_DIR
    wnids_file = _require(base / "wnids.txt", base_root)
    wnids = sorted({line.strip() for line in wnids_file.read_text().splitlines() if line.strip()})
    if not wnids:
        raise UserError(f"{wnids_file} lists no classes; re-extract tiny-imagenet-200.zip into {base_root}")
    train = _train_samples(base / "train", wnids, base_root)
    test = _val_samples(base / "val", {wnid: i for i, wnid in enumerate(wnids)}, base_root)
    info = DatasetInfo(
        name="tinyimagenet",
        num_classes=len(wnids),
        in_channels=3,
        image_size=64,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
    )
    return DataBundle(train=ImageListDataset(train), test=ImageListDataset(test), info=info)
