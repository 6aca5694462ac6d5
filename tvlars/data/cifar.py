"""CIFAR-10 / CIFAR-100: torchvision's pickled batches, or (CIFAR-10) an image-folder export."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from tvlars import distributed
from tvlars.data._folder import image_folder
from tvlars.data._memory import TensorImageDataset
from tvlars.data.base import DataBundle, DatasetInfo
from tvlars.data.fake import fake_label, fake_pixels, per_class, write_class_folders
from tvlars.data.registry import register_dataset
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


def _bad_files(folder: Path, spec: type[CIFAR10], verify_checksums: bool) -> list[str]:
    """Files of ``spec`` missing from ``folder`` (or, when verifying, not matching torchvision's MD5)."""
    entries = spec.train_list + spec.test_list + [[spec.meta["filename"], spec.meta["md5"]]]
    return [name for name, md5 in entries if not check_integrity(folder / name, md5 if verify_checksums else None)]


def _repair(root: Path, folder: Path, spec: type[CIFAR10]) -> str:
    return (f"delete {folder} and set dataset.download=true, or extract the official {spec.filename} into {root} "
            "again")


def _read_batch(path: Path, label_key: str, num_classes: int, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N×3×32×32`` and labels of one pickled batch; any damage is a :class:`UserError` naming the file."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data, labels = np.asarray(entry["data"], dtype=np.uint8), np.asarray(entry[label_key], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - unpickling garbage can raise almost any exception (pickle docs)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise UserError(f"{path} is not a readable CIFAR batch ({reason}); {fix}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise UserError(f"{path}: data {data.shape} and {label_key} {labels.shape} are not N×3072 and N; {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path}: {label_key} outside 0..{num_classes - 1}; {fix}")
    return data.reshape(-1, 3, 32, 32), labels  # stored as R, G, B planes: already C×H×W


def _read_batches(folder: Path, names: list[str], label_key: str, num_classes: int, fix: str) -> TensorImageDataset:
    batches = [_read_batch(folder / name, label_key, num_classes, fix) for name in names]
    images, labels = (np.concatenate(parts) for parts in zip(*batches, strict=True))
    return TensorImageDataset(torch.from_numpy(images), torch.from_numpy(labels))


def _load_pickles(
    root: Path, spec: type[CIFAR10], label_key: str, info: DatasetInfo, download: bool, verify_checksums: bool
) -> DataBundle:
    """Read torchvision's pickled CIFAR batches into memory (``uint8`` ``3×32×32`` tensors)."""
    folder = root / spec.base_folder
    with distributed.local_rank_first():  # one download per node
        if download and _bad_files(folder, spec, verify_checksums):
            download_and_extract_archive(spec.url, str(root), filename=spec.filename, md5=spec.tgz_md5)
    if missing := _bad_files(folder, spec, verify_checksums=False):
        raise UserError(
            f"{info.name} pickles not found (or incomplete: no {folder / missing[0]}) in {folder}; set "
            f"dataset.download=true to fetch them, or point data_root (TVLARS_DATA) at a directory containing "
            f"{spec.base_folder}"
        )
    fix = _repair(root, folder, spec)
    if verify_checksums and (corrupt := _bad_files(folder, spec, verify_checksums=True)):
        others = f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""
        raise UserError(
            f"{folder / corrupt[0]}{others} fails torchvision's MD5 check (damaged, or not the official {info.name} "
            f"files); {fix}, or set dataset.verify_checksums=false to use them as they are"
        )
    return DataBundle(
        train=_read_batches(folder, [name for name, _ in spec.train_list], label_key, info.num_classes, fix),
        test=_read_batches(folder, [name for name, _ in spec.test_list], label_key, info.num_classes, fix),
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


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _fake_batch(indices: Sequence[int], label_key: str, num_classes: int, name: str) -> dict:
    batch = {
        "batch_label": name,
        label_key: [fake_label(i, num_classes) for i in indices],
        "data": np.stack([fake_pixels(i).reshape(-1) for i in indices]).astype(np.uint8),
        "filenames": [f"fake_{i:05d}.png" for i in indices],
    }
    if label_key == "fine_labels":
        batch["coarse_labels"] = [label // 5 for label in batch[label_key]]
    return batch


def write_fake_cifar10(
    root: str | Path, n_train: int = 50, n_test: int = 20, format: str = "pickle", ext: str = "jpg"
) -> dict[str, Any]:
    """Write a fake CIFAR-10 under ``root``; returns the dataset keys that load it.

    ``format="pickle"``: ``cifar-10-batches-py`` (5 train batches, test batch, ``batches.meta``); train item
    ``i`` is ``fake_pixels(i)`` with label ``fake_label(i, 10)``, test item ``j`` uses global index ``n_train + j``.
    ``format="imagefolder"``: ``cifar10-jpeg/{train,test}/<class>/<k>.<ext>`` in ``class_colour(label)``,
    ``n // 10`` images per class (at least one).
    """
    if format == "imagefolder":
        for split, n in (("train", n_train), ("test", n_test)):
            write_class_folders(Path(root) / CIFAR10_JPEG_DIR / split, CIFAR10_CLASSES, per_class(n, 10), 32, ext)
        return {"format": "imagefolder"}
    folder = Path(root) / CIFAR10.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _dump(folder / f"data_batch_{k}", _fake_batch(part.tolist(), "labels", 10, f"training batch {k} of 5"))
    test = range(n_train, n_train + n_test)
    _dump(folder / "test_batch", _fake_batch(test, "labels", 10, "testing batch 1 of 1"))
    meta = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": 10000, "num_vis": 3072}
    _dump(folder / "batches.meta", meta)
    return {"format": "pickle", "verify_checksums": False}  # fakes cannot match the official MD5s


def write_fake_cifar100(root: str | Path, n_train: int = 50, n_test: int = 20) -> dict[str, Any]:
    """Write ``<root>/cifar-100-python`` (``train``, ``test``, ``meta``); returns the dataset keys that load it.

    Same item convention as :func:`write_fake_cifar10`, with ``fake_label(i, 100)`` as the fine label.
    """
    folder = Path(root) / CIFAR100.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    _dump(folder / "train", _fake_batch(range(n_train), "fine_labels", 100, "training batch 1 of 1"))
    _dump(folder / "test", _fake_batch(range(n_train, n_train + n_test), "fine_labels", 100, "testing batch 1 of 1"))
    _dump(folder / "meta", {"fine_label_names": [f"fine_{k:02d}" for k in range(100)],
                            "coarse_label_names": [f"coarse_{k:02d}" for k in range(20)]})
    return {"verify_checksums": False}


@register_dataset("cifar10", train_size=50_000, write_fake=write_fake_cifar10, image=(3, 32))
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


@register_dataset("cifar100", train_size=50_000, write_fake=write_fake_cifar100, image=(3, 32))
def load_cifar100(root: str, download: bool = False, verify_checksums: bool = True) -> DataBundle:
    """CIFAR-100 (fine labels) from torchvision's ``<root>/cifar-100-python`` pickles, as uint8 tensors."""
    return _load_pickles(
        Path(root).expanduser(), CIFAR100, "fine_labels", CIFAR100_INFO, download, verify_checksums
    )
