"""Fashion-MNIST from IDX files (Debian `dataset-fashion-mnist` package, or torchvision's raw folder)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from tvlars.data._memory import TensorImageDataset
from tvlars.data.base import DataBundle, DatasetInfo
from tvlars.errors import UserError

FASHION_MNIST_INFO = DatasetInfo(
    name="fashion_mnist", num_classes=10, in_channels=1, image_size=28, mean=(0.2860,), std=(0.3530,)
)
_SPLITS = {"train": "train", "test": "t10k"}
_IDX_DTYPE = {0x08: np.uint8}


def _idx_paths(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in ``directory`` (each ``.gz`` or uncompressed), or ``None`` if any is missing."""
    paths = {}
    for prefix in _SPLITS.values():
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            stem = f"{prefix}-{kind}"
            found = [p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()]
            if not found:
                return None
            paths[stem] = found[0]
    return paths


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPE:
        raise UserError(f"{path} is not an unsigned-byte IDX file; delete it and reinstall the dataset")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=_IDX_DTYPE[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated ({data.size} values for shape {shape}); re-download it")
    return data.reshape(shape)


def _load_split(paths: dict[str, Path], prefix: str) -> TensorImageDataset:
    image_path, label_path = paths[f"{prefix}-images-idx3-ubyte"], paths[f"{prefix}-labels-idx1-ubyte"]
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(
            f"{image_path}: shape {images.shape} does not match {label_path} shape {labels.shape}; "
            "reinstall the dataset"
        )
    return TensorImageDataset(
        torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
    )


def load_fashion_mnist(
    root: str, download: bool = False, system_dir: str = "/usr/share/datasets/fashion-mnist"
) -> DataBundle:
    """Fashion-MNIST as in-memory ``uint8`` tensors (``1×28×28``, labels 0–9).

    Looks in ``system_dir`` first, then torchvision's ``<root>/FashionMNIST/raw``; downloads there with
    torchvision when neither has the files and ``download`` is true.
    """
    system = Path(system_dir)
    raw = Path(root).expanduser() / "FashionMNIST" / "raw"
    paths = _idx_paths(system) or _idx_paths(raw)
    if paths is None and download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(root, train=True, download=True)
        paths = _idx_paths(raw)
    if paths is None:
        raise UserError(
            f"Fashion-MNIST IDX files not found in {system} nor in {raw}; install them with "
            "`apt-get install dataset-fashion-mnist`, or set dataset.download=true to fetch them into "
            f"{raw}"
        )
    return DataBundle(
        train=_load_split(paths, _SPLITS["train"]),
        test=_load_split(paths, _SPLITS["test"]),
        info=FASHION_MNIST_INFO,
    )
