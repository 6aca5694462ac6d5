"""What every dataset loader returns: raw datasets plus the facts transforms and models need."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset (normalisation statistics are per channel, on the [0, 1] scale)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class DataBundle:
    """Untransformed train, test and (once :func:`tvlars.data.splits.validation_split` has held it out of train)
    validation splits.

    Items are ``(image, label)`` with ``image`` a PIL image or a ``uint8`` tensor of shape ``C×H×W``
    and ``label`` an ``int``. Tasks attach their own transforms (see :mod:`tvlars.data.transforms`).
    """

    train: Dataset
    test: Dataset
    info: DatasetInfo
    val: Dataset | None = None
