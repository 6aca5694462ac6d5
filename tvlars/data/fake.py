"""Writers of tiny fake datasets in the real on-disk formats, for tests that must not need real data.

Pixel content is predictable: :func:`fake_pixels` gives the exact image stored for a global index (CIFAR
pickles and Fashion-MNIST IDX files, which are lossless); image-folder fakes use one solid colour per class
(:func:`class_colour`), which survives JPEG compression closely enough to tell classes apart.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Deliberately unsorted, like the real wnids.txt: class index = position in the *sorted* list.
FAKE_WNIDS = ("n09999999", "n01443537", "n04067472", "n02124075", "n01629819")


def fake_pixels(index: int, channels: int = 3, size: int = 32) -> np.ndarray:
    """The ``uint8`` ``channels×size×size`` image the fakes store for global item ``index``.

    Every channel, row and column has a different offset, so a channel-order or transpose bug changes it.
    """
    c = np.arange(channels).reshape(-1, 1, 1)
    h = np.arange(size).reshape(1, -1, 1)
    w = np.arange(size).reshape(1, 1, -1)
    return ((index * 37 + c * 85 + h * 5 + w * 3) % 256).astype(np.uint8)


def fake_label(index: int, num_classes: int) -> int:
    """The label the fakes store for global item ``index``."""
    return (index * 7 + 3) % num_classes


def class_colour(label: int) -> tuple[int, int, int]:
    """The solid RGB colour of every image of class ``label`` in image-folder fakes."""
    return ((label * 53 + 20) % 256, (label * 101 + 60) % 256, (label * 29 + 200) % 256)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_batch(indices: Sequence[int], label_key: str, num_classes: int, name: str) -> dict:
    batch = {
        "batch_label": name,
        label_key: [fake_label(i, num_classes) for i in indices],
        "data": np.stack([fake_pixels(i).reshape(-1) for i in indices]).astype(np.uint8),
        "filenames": [f"fake_{i:05d}.png" for i in indices],
    }
    if label_key == "fine_labels":
        batch["coarse_labels"] = [label // 5 for label in batch[label_key]]
    return batch


def write_fake_cifar10(root: str | Path, n_train: int = 50, n_test: int = 20) -> Path:
    """Write ``<root>/cifar-10-batches-py`` (5 train batches, test batch, ``batches.meta``); returns that dir.

    Train item ``i`` is ``fake_pixels(i)`` with label ``fake_label(i, 10)``; test item ``j`` uses global
    index ``n_train + j``.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _dump(
            folder / f"data_batch_{k}", _cifar_batch(part.tolist(), "labels", 10, f"training batch {k} of 5")
        )
    test = range(n_train, n_train + n_test)
    _dump(folder / "test_batch", _cifar_batch(list(test), "labels", 10, "testing batch 1 of 1"))
    _dump(
        folder / "batches.meta",
        {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": 10000, "num_vis": 3072},
    )
    return folder


def write_fake_cifar100(root: str | Path, n_train: int = 50, n_test: int = 20) -> Path:
    """Write ``<root>/cifar-100-python`` (``train``, ``test``, ``meta``); returns that dir.

    Same item convention as :func:`write_fake_cifar10`, with ``fake_label(i, 100)`` as the fine label.
    """
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    _dump(folder / "train", _cifar_batch(list(range(n_train)), "fine_labels", 100, "training batch 1 of 1"))
    test = range(n_train, n_train + n_test)
    _dump(folder / "test", _cifar_batch(list(test), "fine_labels", 100, "testing batch 1 of 1"))
    meta = {
        "fine_label_names": [f"fine_{k:02d}" for k in range(100)],
        "coarse_label_names": [f"coarse_{k:02d}" for k in range(20)],
    }
    _dump(folder / "meta", meta)
    return folder


def _write_image(path: Path, colour: tuple[int, int, int], size: int, grey: bool = False) -> None:
    image = Image.new("RGB", (size, size), colour)
    (image.convert("L") if grey else image).save(path)


def write_fake_imagefolder(
    root: str | Path,
    classes: Sequence[str],
    n_per_class: int = 2,
    size: int = 32,
    splits: Sequence[str] = ("train", "test"),
    ext: str = "jpg",
) -> Path:
    """Write ``<root>/<split>/<class>/<k>.<ext>`` solid-colour images (class ``k`` of the sorted classes gets
    ``class_colour(k)``); returns ``root``. E.g. ``root=<data_root>/cifar10-jpeg`` or ``<data_root>/imagenet``
    with ``splits=("train", "val")``.
    """
    root = Path(root)
    for split in splits:
        for label, name in enumerate(sorted(classes)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n_per_class):
                _write_image(folder / f"{k:04d}.{ext}", class_colour(label), size)
    return root


def write_fake_tinyimagenet(
    root: str | Path, wnids: Sequence[str] = FAKE_WNIDS, n_train_per_class: int = 3, n_val_per_class: int = 2
) -> Path:
    """Write ``<root>/tiny-imagenet-200`` in the official layout (64×64 JPEGs); returns that dir.

    ``wnids.txt`` keeps the given (unsorted) order; labels follow the sorted wnids, and every image has its
    class's :func:`class_colour`. The first training image is greyscale, as some real ones are.
    """
    base = Path(root) / "tiny-imagenet-200"
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (base / "words.txt").write_text("".join(f"{w}\tfake class {w}\n" for w in wnids))
    label_of = {w: i for i, w in enumerate(sorted(wnids))}
    for wnid in wnids:
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True, exist_ok=True)
        boxes = []
        for k in range(n_train_per_class):
            name = f"{wnid}_{k}.JPEG"
            grey = wnid == wnids[0] and k == 0
            _write_image(images / name, class_colour(label_of[wnid]), 64, grey=grey)
            boxes.append(f"{name}\t0\t0\t63\t63\n")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    val_images = base / "val" / "images"
    val_images.mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(n_val_per_class * len(wnids)):
        wnid = wnids[k % len(wnids)]
        _write_image(val_images / f"val_{k}.JPEG", class_colour(label_of[wnid]), 64)
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    return base


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_fake_fashion_mnist(
    directory: str | Path, n_train: int = 12, n_test: int = 6, compress: bool = True
) -> Path:
    """Write the four Fashion-MNIST IDX files (``.gz`` if ``compress``) into ``directory``; returns it.

    Train item ``i`` is ``fake_pixels(i, 1, 28)[0]`` with label ``fake_label(i, 10)``; test item ``j`` uses
    global index ``n_train + j``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, indices in (("train", range(n_train)), ("t10k", range(n_train, n_train + n_test))):
        images = np.stack([fake_pixels(i, 1, 28)[0] for i in indices])
        labels = np.array([fake_label(i, 10) for i in indices], dtype=np.uint8)
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return directory
