"""Dataset loaders (Hydra ``_target_``s returning :class:`DataBundle`), their registry (training-set size and fake
writer per dataset, :mod:`tvlars.data.registry`) and classification transforms."""

from tvlars.data._memory import TensorImageDataset
from tvlars.data.base import DataBundle, DatasetInfo
from tvlars.data.cifar import load_cifar10, load_cifar100
from tvlars.data.fashion_mnist import load_fashion_mnist
from tvlars.data.imagenet import load_imagenet
from tvlars.data.registry import DATASETS, register_dataset, registered, train_size, write_fake
from tvlars.data.synthetic import load_synthetic
from tvlars.data.tinyimagenet import load_tinyimagenet
from tvlars.data.transforms import TransformedDataset, classification_transforms

__all__ = [
    "DATASETS",
    "DataBundle",
    "DatasetInfo",
    "TensorImageDataset",
    "TransformedDataset",
    "classification_transforms",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_imagenet",
    "load_synthetic",
    "load_tinyimagenet",
    "register_dataset",
    "registered",
    "train_size",
    "write_fake",
]
