"""What the fake datasets store, shared by the fake writers that sit beside each loader (``write_fake_*``).

Pixel content is predictable: :func:`fake_pixels` gives the exact image stored for a global index (CIFAR
pickles and Fashion-MNIST IDX files, which are lossless); image-folder fakes use one solid colour per class
(:func:`class_colour`), which survives JPEG compression closely enough to tell classes apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

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


def per_class(n_images: int, num_classes: int) -> int:
    """Images per class of a class-balanced fake of about ``n_images`` images (at least one per class)."""
    return max(1, n_images // num_classes)


def write_image(path: Path, label: int, size: int, grey: bool = False) -> None:
    """A ``size×size`` image of ``class_colour(label)`` (saved greyscale if ``grey``), format from the suffix."""
    image = Image.new("RGB", (size, size), class_colour(label))
    (image.convert("L") if grey else image).save(path)


def write_class_folders(directory: str | Path, classes: Sequence[str], n_per_class: int, size: int,
                        ext: str = "jpg") -> Path:
    """Write ``<directory>/<class>/<k>.<ext>`` images, class ``k`` of the *sorted* classes in ``class_colour(k)``
    (torchvision's ImageFolder labels); returns ``directory``."""
    directory = Path(directory)
    for label, name in enumerate(sorted(classes)):
        folder = directory / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(n_per_class):
            write_image(folder / f"{k:04d}.{ext}", label, size)
    return directory
