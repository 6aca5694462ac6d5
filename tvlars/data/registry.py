"""Datasets by name: each loader module registers its loader with the size of its training split and a writer of a
tiny fake in the real on-disk format, so adding a dataset is one loader module, one YAML and one test.

A dataset is looked up by its name (``cifar10``), by its YAML's ``_target_`` (``tvlars.data.load_cifar10``) or by a
dataset config node holding that ``_target_``; nothing is loaded to answer :func:`train_size`.
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
    name of the loader argument that sets it (synthetic data: ``"num_train"``)."""

    name: str
    load: Callable[..., DataBundle]
    train_size: int | str
    write_fake: FakeWriter


DATASETS: dict[str, RegisteredDataset] = {}


def register_dataset(name: str, *, train_size: int | str, write_fake: FakeWriter) -> Callable[[Loader], Loader]:
    """Decorator registering a loader under ``name`` (the name its :class:`DatasetInfo` and YAML file carry)."""

    def decorate(load: Loader) -> Loader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice ({DATASETS[name].load.__module__}, "
                             f"{load.__module__})")
        DATASETS[name] = RegisteredDataset(name, load, train_size, write_fake)
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


def train_size(dataset_cfg: Mapping[str, Any]) -> int:
    """Training images of a composed dataset config, without loading any data (e.g. for cost estimates)."""
    entry = registered(dataset_cfg)
    if isinstance(entry.train_size, int):
        return entry.train_size
    argument = entry.train_size
    if argument in dataset_cfg:
        return int(dataset_cfg[argument])
    return int(inspect.signature(entry.load).parameters[argument].default)


def write_fake(dataset: str | Mapping[str, Any], root: str | Path, n_train: int = 96,
               n_test: int = 48) -> dict[str, Any]:
    """Write a tiny fake of ``dataset`` under ``root`` (about ``n_train`` + ``n_test`` images, in the real on-disk
    format); returns the dataset config keys that make its loader read the fake with ``root=root``."""
    return registered(dataset).write_fake(Path(root), n_train, n_test)
