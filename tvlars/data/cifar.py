"""CIFAR-10 / CIFAR-100: torchvision's pickled batches, or (CIFAR-10) an image-folder export."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from tvlars.data._folder import image_folder
from tvlars.data._memory import TensorImageDataset
from tvlars.data.base import DataBundle, DatasetInfo
from tvlars.errors import UserError

CIFAR10_INFO = DatasetInfo(
    name="cifar10",
    num_classes=10,
    in_channels=3,
    image_size=32,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
CIFAR100_INFO = DatasetInfo(
    name="cifar100",
    num_classes=100,
    in_channels=3,
    image_size=32,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_JPEG_DIR = "cifar10-jpeg"
FORMATS = ("auto", "pickle", "imagefolder")


def _files_ok(folder: Path, spec: type[CIFAR10], verify_checksums: bool) -> bool:
    """Every file of ``spec`` exists in ``folder`` (and matches torchvision's MD5 when verifying)."""
    entries = spec.train_list + spec.test_list + [[spec.meta["filename"], spec.meta["md5"]]]
    return all(check_integrity(folder / name, md5 if verify_checksums else None) for name, md5 in entries)


def _read_batches(folder: Path, names: list[str], label_key: str, num_classes: int) -> TensorImageDataset:
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        try:
            data, batch_labels = np.asarray(entry["data"], dtype=np.uint8), entry[label_key]
        except KeyError as exc:
            raise UserError(f"{folder / name} lacks key {exc}; not a CIFAR batch, re-download it") from exc
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch_labels):
            raise UserError(f"{folder / name}: data shape {data.shape} is not N×3072; re-download it")
        images.append(data.reshape(-1, 3, 32, 32))  # stored as R, G, B planes: already C×H×W
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    label_array = np.concatenate(labels)
    if label_array.min() < 0 or label_array.max() >= num_classes:
        raise UserError(f"{folder}: labels outside 0..{num_classes - 1} in {names}; re-download the dataset")
    return TensorImageDataset(torch.from_numpy(np.concatenate(images)), torch.from_numpy(label_array))


def _load_pickles(
    root: Path, spec: type[CIFAR10], label_key: str, info: DatasetInfo, download: bool, verify_checksums: bool
) -> DataBundle:
    """Read torchvision's pickled CIFAR batches into memory (``uint8`` ``3×32×32`` tensors)."""
    folder = root / spec.base_folder
    if download and not _files_ok(folder, spec, verify_checksums):
        download_and_extract_archive(spec.url, str(root), filename=spec.filename, md5=spec.tgz_md5)
    if not _files_ok(folder, spec, verify_checksums=False):
        raise UserError(
            f"{info.name} pickles not found (or incomplete) in {folder}; set dataset.download=true to fetch "
            f"them, or point data_root (TVLARS_DATA) at a directory containing {spec.base_folder}"
        )
    if verify_checksums and not _files_ok(folder, spec, verify_checksums=True):
        raise UserError(
            f"{folder}: files fail torchvision's MD5 check (corrupt, or not the official {info.name} files); "
            "delete it and set dataset.download=true, or set dataset.verify_checksums=false to use them"
        )
    return DataBundle(
        train=_read_batches(folder, [name for name, _ in spec.train_list], label_key, info.num_classes),
        test=_read_batches(folder, [name for name, _ in spec.test_list], label_key, info.num_classes),
        info=info,
    )


def _load_cifar10_imagefolder(root: Path) -> DataBundle:
    """``<root>/cifar10-jpeg/{train,test}/<class>/*.jpg`` with the ten canonical class folders."""
    base = root / CIFAR10_JPEG_DIR
    fix = f"extract cifar10-jpeg.tar.gz into {root} (tar -xzf cifar10-jpeg.tar.gz -C {root})"
    splits = {split: image_folder(base / split, fix) for split in ("train", "test")}
    for split, dataset in splits.items():
        if tuple(dataset.classes) != CIFAR10_CLASSES:
            raise UserError(
                f"{base / split}: class folders {dataset.classes} are not the CIFAR-10 classes "
                f"{list(CIFAR10_CLASSES)}; rename them so alphabetical order gives the canonical labels"
            )
    return DataBundle(train=splits["train"], test=splits["test"], info=CIFAR10_INFO)


def load_cifar10(
    root: str, download: bool = False, format: str = "auto", verify_checksums: bool = True
) -> DataBundle:
    """CIFAR-10 from ``<root>/cifar-10-batches-py`` (``format=pickle``) or ``<root>/cifar10-jpeg``
    (``format=imagefolder``); ``auto`` takes whichever exists, pickles first, and downloads if allowed.

    Pickle items are ``uint8`` tensors (``.images``/``.labels`` exposed); image-folder items are PIL images.
    ``verify_checksums=False`` skips torchvision's MD5 check (only for non-canonical copies, e.g. test fakes).
    """
    if format not in FORMATS:
        raise UserError(f"dataset.format={format!r} is not one of {list(FORMATS)}")
    base = Path(root).expanduser()
    if format == "auto":
        pickles, jpegs = base / CIFAR10.base_folder, base / CIFAR10_JPEG_DIR
        if pickles.is_dir() or (download and not jpegs.is_dir()):
            format = "pickle"
        elif jpegs.is_dir():
            format = "imagefolder"
        else:
            raise UserError(
                f"CIFAR-10 not found: checked {pickles} and {jpegs}; set dataset.download=true, point "
                f"TVLARS_DATA=<dir> (or data_root=<dir>) at a directory holding it, or extract "
                f"cifar10-jpeg.tar.gz into {base}"
            )
    if format == "imagefolder":
        return _load_cifar10_imagefolder(base)
    return _load_pickles(base, CIFAR10, "labels", CIFAR10_INFO, download, verify_checksums)


def load_cifar100(root: str, download: bool = False, verify_checksums: bool = True) -> DataBundle:
    """CIFAR-100 (fine labels) from torchvision's ``<root>/cifar-100-python`` pickles, as uint8 tensors."""
    return _load_pickles(
        Path(root).expanduser(), CIFAR100, "fine_labels", CIFAR100_INFO, download, verify_checksums
    )
