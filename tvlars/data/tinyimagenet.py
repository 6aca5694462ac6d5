"""Tiny-ImageNet (200 classes, 64×64 RGB) in the standard ``tiny-imagenet-200`` layout; val = test split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from tvlars.data._folder import open_rgb
from tvlars.data.base import DataBundle, DatasetInfo
from tvlars.data.fake import FAKE_WNIDS, per_class, write_image
from tvlars.data.registry import register_dataset
from tvlars.errors import UserError

TINYIMAGENET_DIR = "tiny-imagenet-200"
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_GET_IT = "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into"
_REPAIR = "re-extract tiny-imagenet-200.zip into"


class ImageListDataset(Dataset):
    """Items ``(PIL RGB image, label)`` from a list of ``(path, label)``; images open lazily, and a damaged one
    raises :class:`UserError` naming it, with ``fix``."""

    def __init__(self, samples: list[tuple[str, int]], fix: str) -> None:
        self.samples, self.fix = samples, fix
        self.targets = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return open_rgb(path, self.fix), label  # some Tiny-ImageNet images are greyscale


def write_fake_tinyimagenet(
    root: str | Path, n_train: int = 15, n_test: int = 10, wnids: Sequence[str] = FAKE_WNIDS
) -> dict[str, Any]:
    """Write ``<root>/tiny-imagenet-200`` in the official layout (64×64 JPEGs, ``n // len(wnids)`` per class, at
    least one); nothing needs setting to load it.

    ``wnids.txt`` keeps the given (unsorted) order; labels follow the sorted wnids, and every image has its
    class's :func:`~tvlars.data.fake.class_colour`. The first training image is greyscale, as some real ones are.
    """
    base = Path(root) / TINYIMAGENET_DIR
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (base / "words.txt").write_text("".join(f"{w}\tfake class {w}\n" for w in wnids))
    label_of = {w: i for i, w in enumerate(sorted(wnids))}
    for wnid in wnids:
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True, exist_ok=True)
        boxes = []
        for k in range(per_class(n_train, len(wnids))):
            name = f"{wnid}_{k}.JPEG"
            write_image(images / name, label_of[wnid], 64, grey=wnid == wnids[0] and k == 0)
            boxes.append(f"{name}\t0\t0\t63\t63\n")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    val_images = base / "val" / "images"
    val_images.mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(per_class(n_test, len(wnids)) * len(wnids)):
        wnid = wnids[k % len(wnids)]
        write_image(val_images / f"val_{k}.JPEG", label_of[wnid], 64)
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    return {}


def _require(path: Path, root: Path) -> Path:
    if not path.exists():
        raise UserError(f"{path} not found; {_GET_IT} {root}")
    return path


def _lines(path: Path, root: Path) -> list[str]:
    """The non-blank lines of a text file of the layout (a binary or garbled one is a :class:`UserError`)."""
    try:
        return [line for line in _require(path, root).read_text().splitlines() if line.strip()]
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path} is not a readable text file ({type(exc).__name__}); {_REPAIR} {root}") from None


def _train_samples(train_dir: Path, wnids: list[str], root: Path) -> list[tuple[str, int]]:
    samples = []
    for label, wnid in enumerate(wnids):
        images = _require(train_dir / wnid / "images", root)
        names = sorted(e.name for e in os.scandir(images) if e.name.lower().endswith(_IMAGE_SUFFIXES))
        if not names:
            raise UserError(f"{images} holds no images; {_REPAIR} {root}")
        samples.extend((str(images / name), label) for name in names)
    return samples


def _val_samples(val_dir: Path, class_index: dict[str, int], root: Path) -> list[tuple[str, int]]:
    annotations = val_dir / "val_annotations.txt"
    lines = _lines(annotations, root)
    images = _require(val_dir / "images", root)
    samples = []
    for line_no, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_index:
            raise UserError(
                f"{annotations}:{line_no}: expected '<file>\\t<wnid from wnids.txt>\\t...'; re-extract it"
            )
        samples.append((fields[0], class_index[fields[1]]))
    if not samples:
        raise UserError(f"{annotations} lists no images; {_REPAIR} {root}")
    present = set(os.listdir(images))
    missing = [name for name, _ in samples if name not in present]
    if missing:
        raise UserError(f"{annotations} names {len(missing)} files missing from {images} (e.g. {missing[0]}); "
                        f"{_REPAIR} {root}")
    return [(str(images / name), label) for name, label in samples]


@register_dataset("tinyimagenet", train_size=100_000, write_fake=write_fake_tinyimagenet, image=(3, 64))
def load_tinyimagenet(root: str) -> DataBundle:
    """Tiny-ImageNet from ``<root>/tiny-imagenet-200`` (class index = position in sorted ``wnids.txt``).

    Builds file lists only (no image is opened); items are ``(PIL RGB 64×64 image, int)``.
    """
    base_root = Path(root).expanduser()
    base = base_root / TINYIMAGENET_DIR
    wnids_file = base / "wnids.txt"
    wnids = sorted({line.strip() for line in _lines(wnids_file, base_root)})
    if not wnids:
        raise UserError(f"{wnids_file} lists no classes; {_REPAIR} {base_root}")
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
    fix = f"{_REPAIR} {base_root}"
    return DataBundle(train=ImageListDataset(train, fix), test=ImageListDataset(test, fix), info=info)
