"""ImageNet-1k (ILSVRC-2012) from ``<root>/imagenet/{train,val}/<wnid>/*`` class folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvlars.data._folder import image_folder
from tvlars.data.base import DataBundle, DatasetInfo
from tvlars.data.fake import FAKE_WNIDS, per_class, write_class_folders
from tvlars.data.registry import register_dataset
from tvlars.errors import UserError

IMAGENET_DIR = "imagenet"
VALPREP_URL = "https://raw.githubusercontent.com/soumith/imagenetloader.torch/master/valprep.sh"
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def write_fake_imagenet(
    root: str | Path, n_train: int = 6, n_test: int = 6, wnids: tuple[str, ...] = FAKE_WNIDS[:3], size: int = 64
) -> dict[str, Any]:
    """Write ``<root>/imagenet/{train,val}/<wnid>/<k>.JPEG`` (``size`` px, ``class_colour`` of the sorted wnid's
    index, ``n // len(wnids)`` per class, at least one); nothing needs setting to load it."""
    for split, n in (("train", n_train), ("val", n_test)):
        write_class_folders(Path(root) / IMAGENET_DIR / split, wnids, per_class(n, len(wnids)), size, "JPEG")
    return {}


def _check_layout(base: Path) -> None:
    """The two common half-done set-ups: per-class ``.tar`` archives in ``train/`` and loose images in ``val/``."""
    train_dir, val_dir = base / "train", base / "val"
    if train_dir.is_dir() and not any(p.is_dir() for p in train_dir.iterdir()):
        archives = sorted(p.name for p in train_dir.glob("*.tar"))
        if archives:
            raise UserError(
                f"{train_dir} holds {len(archives)} .tar archives (e.g. {archives[0]}) instead of <wnid>/ folders; "
                f"extract each into its own folder: cd {train_dir} && for f in *.tar; do mkdir -p \"${{f%.tar}}\" "
                "&& tar -xf \"$f\" -C \"${f%.tar}\"; done"
            )
    if val_dir.is_dir():
        loose = [p.name for p in val_dir.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES]
        if loose:
            raise UserError(
                f"{val_dir} holds {len(loose)} loose images (e.g. {loose[0]}) instead of <wnid>/ folders; "
                f"sort them into class folders with {VALPREP_URL} (run it inside {val_dir})"
            )


@register_dataset("imagenet", train_size=1_281_167, write_fake=write_fake_imagenet, image=(3, 224))
def load_imagenet(root: str) -> DataBundle:
    """ImageNet as two torchvision ImageFolders (items ``(PIL RGB image, int)``, labels = sorted wnids)."""
    base = Path(root).expanduser() / IMAGENET_DIR
    fix = f"extract ILSVRC-2012 train and val into {base}/{{train,val}}/<wnid>/ (one folder per class)"
    _check_layout(base)
    train, test = image_folder(base / "train", fix), image_folder(base / "val", fix)
    if train.classes != test.classes:
        missing_in_val = sorted(set(train.classes) - set(test.classes))
        where, wnid = ((base / "val", missing_in_val[0]) if missing_in_val
                       else (base / "train", sorted(set(test.classes) - set(train.classes))[0]))
        raise UserError(
            f"{where} lacks class folder {wnid} ({len(test.classes)} val vs {len(train.classes)} train classes); "
            "train and val need the same <wnid>/ folders"
        )
    info = DatasetInfo(
        name="imagenet",
        num_classes=len(train.classes),
        in_channels=3,
        image_size=224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    return DataBundle(train=train, test=test, info=info)
