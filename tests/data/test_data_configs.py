"""configs/dataset/*.yaml: each builds its loader via Hydra, and its `augment` block fits the transforms."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from tvlars.data import DataBundle, classification_transforms
from tvlars.data.fake import write_fake_cifar10, write_fake_cifar100, write_fake_tinyimagenet

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "dataset"
NAMES = ["fashion_mnist", "cifar10", "cifar100", "tinyimagenet", "imagenet", "synthetic"]
FAKE_WRITERS: dict[str, Callable[[Path], object]] = {
    "cifar10": write_fake_cifar10,
    "cifar100": write_fake_cifar100,
    "tinyimagenet": write_fake_tinyimagenet,
    "fashion_mnist": lambda root: None,  # real data from the system directory
    "synthetic": lambda root: None,
}


def _config(name: str, data_root: Path) -> dict:
    tree = OmegaConf.create(
        {"data_root": str(data_root), "dataset": OmegaConf.load(CONFIG_DIR / f"{name}.yaml")}
    )
    return OmegaConf.to_container(tree.dataset, resolve=True)  # type: ignore[return-value]


@pytest.mark.parametrize("name", NAMES)
def test_yaml_keys_match_the_loader_and_transforms(name: str, tmp_path: Path) -> None:
    text = (CONFIG_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# ") and text.splitlines()[1].startswith("_target_: tvlars.data.load_")
    config = _config(name, tmp_path)
    assert set(config["augment"]) == set(inspect.signature(classification_transforms).parameters) - {"info"}
    loader_parameters = inspect.signature(get_object(config["_target_"])).parameters
    assert set(config) - {"_target_", "augment"} <= set(loader_parameters)


@pytest.mark.parametrize("name", sorted(FAKE_WRITERS))
def test_yaml_instantiates_to_a_bundle(name: str, tmp_path: Path) -> None:
    FAKE_WRITERS[name](tmp_path)
    config = _config(name, tmp_path)
    augment = config.pop("augment")
    if "verify_checksums" in config:
        config["verify_checksums"] = False  # fakes cannot match the real MD5s
    bundle = instantiate(config)
    assert isinstance(bundle, DataBundle) and bundle.info.name == name
    train, test = classification_transforms(bundle.info, **augment)
    image, _ = bundle.train[0]
    size = bundle.info.image_size
    assert train(image).shape == test(image).shape == (bundle.info.in_channels, size, size)
