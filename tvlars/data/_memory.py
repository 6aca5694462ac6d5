"""In-memory image dataset over uint8 tensors (Fashion-MNIST, CIFAR pickles, synthetic)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TensorImageDataset(Dataset):
    """Items are ``(images[i], int(labels[i]))``.

    ``images`` is a ``uint8`` tensor ``N×C×H×W`` and ``labels`` an ``int64`` tensor ``N``; both stay
    exposed as attributes so a GPU-resident loader can move them to the device in one go.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {images.dtype} {tuple(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be 1-D of length {len(images)}, got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])
