"""Shared helper: a torchvision ImageFolder whose setup problems surface as :class:`UserError`."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageFolder

from tvlars.errors import UserError


def image_folder(directory: Path, fix: str) -> ImageFolder:
    """``ImageFolder(directory)`` (items ``(PIL RGB image, int)``); ``fix`` says how to get the data."""
    if not directory.is_dir():
        raise UserError(f"{directory} not found; {fix}")
    try:
        return ImageFolder(str(directory))
    except FileNotFoundError as exc:  # no class folders, or a class folder without images
        raise UserError(f"{directory}: {exc}; {fix}") from exc
