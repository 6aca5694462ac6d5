"""ImageNet-1k (ILSVRC-2012) from ``<root>/imagenet/{train,val}/<wnid>/*`` class folders."""

from __future__ import annotations

from pathlib import Path

from tvlars.data._folder import image_folder
from tvlars.data.base import DataBundle, DatasetInfo
from tvlars.errors import UserError

IMAGENET_DIR = "imagenet"
VALPREP_URL = "https://raw.githubusercontent.com/soumith/imagenetloader.torch/master/valprep.sh"
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def load_imagenet(root: str) -> DataBundle:
    """ImageNet as two torchvision ImageFolders (items ``(PIL RGB image, int)``, labels = sorted wnids)."""
    base_root = Path(root).expanduser()
    base = base_root / IMAGENET_DIR
    fix = f"extract ILSVRC-2012 train and val into {base}/{{train,val}}/<wnid>/ (one folder per class)"
    val_dir = base / "val"
    if val_dir.is_dir():
        loose = [p.name for p in val_dir.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES]
        if loose:
            raise UserError(
                f"{val_dir} holds {len(loose)} loose images (e.g. {loose[0]}) instead of <wnid>/ folders; "
                f"sort them into class folders with {VALPREP_URL} (run it inside {val_dir})"
            )
    train, test = image_folder(base / "train", fix), image_folder(val_dir, fix)
    if train.classes != test.classes:
        raise UserError(
            f"{val_dir} has {len(test.classes)} class folders but {base / 'train'} has {len(train.classes)}; "
            "both need the same <wnid>/ folders"
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
