"""Fashion-MNIST from IDX files (Debian `dataset-fashion-mnist` package, or torchvision's raw folder)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvlars import distributed
from tvlars.data._memory import TensorImageDataset
from tvlars.data.base import DataBundle, DatasetInfo
from tvlars.data.fake import fake_label, fake_pixels
from tvlars.data.registry import register_dataset
from tvlars.errors import UserError

FASHION_MNIST_INFO = DatasetInfo(
    name="fashion_mnist", num_classes=10, in_channels=1, image_size=28, mean=(0.2860,), std=(0.3530,)
)
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
_SPLITS = {"train": "train", "test": "t10k"}
_IDX_DTYPE = {0x08: np.uint8}


def raw_dir(root: str | Path) -> Path:
    """torchvision's download folder for Fashion-MNIST under ``root``."""
    return Path(root).expanduser() / "FashionMNIST" / "raw"


def idx_paths(directory: Path) -> dict[str, Path] | None:
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


def read_idx(path: Path, fix: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array of its declared shape; a damaged file raises
    :class:`UserError` naming it, with ``fix``."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # not gzip, truncated stream, corrupt deflate data, CRC
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {' '.join(str(exc).split())}); {fix}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPE:
        raise UserError(f"{path} is not an unsigned-byte IDX file; {fix}")
    ndim, offset = raw[3], 4 + 4 * raw[3]
    if len(raw) < offset:
        raise UserError(f"{path} is truncated (its header declares {ndim} dimensions); {fix}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=_IDX_DTYPE[raw[2]], offset=offset)
    if data.size != int(np.prod(shape)):
        state = "truncated" if data.size < int(np.prod(shape)) else "too long"
        raise UserError(f"{path} is {state} ({data.size} values for shape {shape}); {fix}")
    return data.reshape(shape)


def _load_split(paths: dict[str, Path], prefix: str, fix: str) -> TensorImageDataset:
    image_path, label_path = paths[f"{prefix}-images-idx3-ubyte"], paths[f"{prefix}-labels-idx1-ubyte"]
    images, labels = read_idx(image_path, fix), read_idx(label_path, fix)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{image_path}: shape {images.shape} does not match {label_path} shape {labels.shape}; {fix}")
    if labels.size and labels.max() >= FASHION_MNIST_INFO.num_classes:
        raise UserError(f"{label_path} holds labels above {FASHION_MNIST_INFO.num_classes - 1}; {fix}")
    return TensorImageDataset(
        torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
    )


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_fake_fashion_mnist(
    root: str | Path, n_train: int = 12, n_test: int = 6, compress: bool = True
) -> dict[str, Any]:
    """Write the four IDX files (``.gz`` if ``compress``) into ``<root>/FashionMNIST/raw``; returns the dataset
    keys that load them (a ``system_dir`` without files, so an installed system copy is not preferred).

    Train item ``i`` is ``fake_pixels(i, 1, 28)[0]`` with label ``fake_label(i, 10)``; test item ``j`` uses
    global index ``n_train + j``.
    """
    directory = raw_dir(root)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, indices in (("train", range(n_train)), ("t10k", range(n_train, n_train + n_test))):
        images = np.stack([fake_pixels(i, 1, 28)[0] for i in indices])
        labels = np.array([fake_label(i, 10) for i in indices], dtype=np.uint8)
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return {"system_dir": str(directory.parent / "no-system-copy")}


@register_dataset("fashion_mnist", train_size=60_000, write_fake=write_fake_fashion_mnist, image=(1, 28))
def load_fashion_mnist(root: str, download: bool = False, system_dir: str = SYSTEM_DIR) -> DataBundle:
    """Fashion-MNIST as in-memory ``uint8`` tensors (``1×28×28``, labels 0–9).

    Looks in ``system_dir`` first, then torchvision's ``<root>/FashionMNIST/raw``; downloads there with
    torchvision when neither has the files and ``download`` is true.
    """
    system, raw = Path(system_dir), raw_dir(root)
    with distributed.local_rank_first():  # one download per node
        paths = idx_paths(system) or idx_paths(raw)
        if paths is None and download:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(root, train=True, download=True)
            paths = idx_paths(raw)
    if paths is None:
        raise UserError(
            f"Fashion-MNIST IDX files not found in {system} nor in {raw}; install them with "
            f"`apt-get install {DEBIAN_PACKAGE}` (or run `make data`), or set dataset.download=true to fetch them "
            f"into {raw}"
        )
    in_system = next(iter(paths.values())).parent == system
    fix = (f"reinstall it with `apt-get install --reinstall {DEBIAN_PACKAGE}`" if in_system
           else f"delete {raw} and set dataset.download=true (or run `make data`)")
    return DataBundle(
        train=_load_split(paths, _SPLITS["train"], fix),
        test=_load_split(paths, _SPLITS["test"], fix),
        info=FASHION_MNIST_INFO,
    )
