"""Shared helpers for image files: opening one with a readable error, and a torchvision ImageFolder whose set-up
problems surface as :class:`UserError`."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from tvlars.errors import UserError


def open_rgb(path: str, fix: str) -> Image.Image:
    """The image at ``path`` decoded as RGB (greyscale and palette files too).

    A damaged file (unreadable, truncated, not an image) raises :class:`UserError` naming it, with ``fix``;
    image files are opened lazily, so on the sampler path this happens when the file is first read.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's decoders raise all three on damaged data
        reason = " ".join(str(exc).split())
        raise UserError(f"{path} is not a readable image ({type(exc).__name__}: {reason}); {fix}") from None


def _first_empty_class(directory: Path) -> Path | None:
    """The first class folder of ``directory`` (sorted) that holds no file ImageFolder accepts, if any."""
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_dir() and not any(name.lower().endswith(IMG_EXTENSIONS)
                                      for _, _, names in os.walk(entry.path, followlinks=True) for name in names):
            return Path(entry.path)
    return None


def image_folder(directory: Path, fix: str) -> ImageFolder:
    """``ImageFolder(directory)`` (items ``(PIL RGB image, int)``); ``fix`` says how to get or repair the data."""
    if not directory.is_dir():
        raise UserError(f"{directory} not found; {fix}")
    try:
        return ImageFolder(str(directory), loader=functools.partial(open_rgb, fix=fix))
    except FileNotFoundError as exc:  # no class folders, or a class folder without images
        empty = _first_empty_class(directory)
        if empty is not None:
            raise UserError(f"{empty} holds no image files; {fix}") from None
        raise UserError(f"{directory} holds no class folders ({' '.join(str(exc).split())}); {fix}") from None
