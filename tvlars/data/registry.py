"""Datasets by name: each loader module registers its loader with the size of its training split and a writer of a
tiny fake in the real on-disk format, so adding a dataset is one loader module, one YAML and one test.

A dataset is looked up by its name (``cifar10``), by its YAML's ``_target_`` (``tvlars.data.load_cifar10``) or by a
dataset config node holding that ``_target_``; nothing is loaded to answer :func:`train_size` or :func:`image_shape`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hydra.utils import get_object

from tvlars.data.base import DataBundle
from tvlars.errors import UserError

Loader = TypeVar("Loader", bound=Callable[..., DataBundle])
# (root, n_train, n_test) → the dataset config keys that make the loader read the fake (e.g. verify_checksums=False)
FakeWriter = Callable[[Path, int, int], dict[str, Any]]


@dataclass(frozen=True)
class RegisteredDataset:
    """A loader and the facts known without loading: ``train_size`` is the number of training images, or the
    name of the loader argument that sets it (synthetic data: ``"num_train"``); ``image`` the channels and side
    of an image as the model sees it, each likewise a number or an argument name (``None``: not declared)."""

    name: str
    load: Callable[..., DataBundle]
    train_size: int | str
    write_fake: FakeWriter
    image: tuple[int | str, int | str] | None = None


DATASETS: dict[str, RegisteredDataset] = {}


def register_dataset(name: str, *, train_size: int | str, write_fake: FakeWriter,
                     image: tuple[int | str, int | str] | None = None) -> Callable[[Loader], Loader]:
    """Decorator registering a loader under ``name`` (the name its :class:`DatasetInfo` and YAML file carry)."""

    def decorate(load: Loader) -> Loader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice ({DATASETS[name].load.__module__}, "
                             f"{load.__module__})")
        DATASETS[name] = RegisteredDataset(name, load, train_size, write_fake, image)
        return load

    return decorate


def registered(dataset: str | Mapping[str, Any]) -> RegisteredDataset:
    """The registration of a dataset given by name, by ``_target_`` or by its config node."""
    key = dataset if isinstance(dataset, str) else dataset.get("_target_")
    if isinstance(key, str) and key in DATASETS:
        return DATASETS[key]
    if isinstance(key, str) and "." not in key:
        raise UserError(f"unknown dataset {key!r}; registered datasets: {', '.join(sorted(DATASETS))}")
    try:
        load = get_object(str(key))
    except Exception:  # noqa: BLE001 - Hydra raises ImportError or ValueError depending on how the path is wrong
        raise UserError(f"dataset._target_={key} cannot be imported; registered datasets: "
                        f"{', '.join(sorted(DATASETS))}") from None
    for entry in DATASETS.values():
        if entry.load is load:
            return entry
    raise UserError(f"dataset._target_={key} is not a registered dataset, so its size is unknown; decorate the "
                    "loader with @register_dataset(name, train_size=..., write_fake=...) from tvlars.data.registry")


def _declared(entry: RegisteredDataset, value: int | str, dataset_cfg: Mapping[str, Any]) -> int:
    """A declared fact: the number itself, or the loader argument's value in ``dataset_cfg`` (else its default)."""
    if isinstance(value, int):
        return value
    if value in dataset_cfg:
        return int(dataset_cfg[value])
    return int(inspect.signature(entry.load).parameters[value].default)


def train_size(dataset_cfg: Mapping[str, Any]) -> int:
    """Training images of a composed dataset config, without loading any data (e.g. for cost estimates)."""
    entry = registered(dataset_cfg)
    return _declared(entry, entry.train_size, dataset_cfg)


def image_shape(dataset_cfg: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(channels, side)`` of an image as the model sees it, without loading any data; ``None`` if the loader
    does not declare it."""
    entry = registered(dataset_cfg)
    if entry.image is None:
        return None
    channels, side = entry.image
    return _declared(entry, channels, dataset_cfg), _declared(entry, side, dataset_cfg)


def write_fake(dataset: str | Mapping[str, Any], root: str | Path, n_train: int = 96,
               n_test: int = 48) -> dict[str, Any]:
    """Write a tiny fake of ``dataset`` under ``root`` (about ``n_train`` + ``n_test`` images, in the real on-disk
    format); returns the dataset config keys that make its loader read the fake with ``root=root``."""
    return registered(dataset).write_fake(Path(root), n_train, n_test)
