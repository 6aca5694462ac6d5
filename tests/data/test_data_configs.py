"""tvlars/configs/dataset/*.yaml against the registry: each YAML composes and validates, its fake loads through the
YAML's loader, its `augment` block fits the transforms, and its training-set size is known without loading."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from tests.helpers import compose_config
from tvlars.config import CONFIG_DIR, DATASET_KEYS, instantiate_node, validate
from tvlars.data import DATASETS, DataBundle, classification_transforms, registered, train_size, write_fake

DATASET_CONFIGS = Path(CONFIG_DIR) / "dataset"
NAMES = sorted(p.stem for p in DATASET_CONFIGS.glob("*.yaml"))


def test_every_yaml_is_a_registered_dataset_and_back() -> None:
    assert NAMES and set(NAMES) == set(DATASETS)


@pytest.mark.parametrize("name", NAMES)
def test_yaml_keys_match_the_loader_and_transforms(name: str, tmp_path: Path) -> None:
    text = (DATASET_CONFIGS / f"{name}.yaml").read_text()
    assert text.startswith("# ") and text.splitlines()[1].startswith("_target_: tvlars.data.load_")
    tree = OmegaConf.create({"data_root": str(tmp_path), "dataset": OmegaConf.load(DATASET_CONFIGS / f"{name}.yaml")})
    config = OmegaConf.to_container(tree.dataset, resolve=True)
    assert isinstance(config, dict)
    assert set(config["augment"]) == set(inspect.signature(classification_transforms).parameters) - {"info"}
    loader_parameters = inspect.signature(get_object(config["_target_"])).parameters
    assert set(config) - {"_target_", *DATASET_KEYS} <= set(loader_parameters)
    assert isinstance(config["val_size"], int) and 0 <= config["val_size"] < train_size(config)


@pytest.mark.parametrize("name", NAMES)
def test_yaml_composes_validates_and_its_fake_loads(name: str, tmp_path: Path) -> None:
    cfg = compose_config([f"dataset={name}", f"data_root={tmp_path}"])
    validate(cfg)
    assert registered(cfg.dataset).name == name
    assert isinstance(train_size(cfg.dataset), int) and train_size(cfg.dataset) > 0
    keys = write_fake(cfg.dataset, tmp_path, n_train=20, n_test=10)
    bundle = instantiate_node(OmegaConf.merge(cfg.dataset, keys), "dataset", skip=DATASET_KEYS)
    assert isinstance(bundle, DataBundle) and bundle.info.name == name
    assert len(bundle.train) >= 10 and len(bundle.test) >= 5
    train, test = classification_transforms(bundle.info, **cfg.dataset.augment)
    image, label = bundle.train[0]
    size = bundle.info.image_size
    assert train(image).shape == test(image).shape == (bundle.info.in_channels, size, size)
    assert 0 <= label < bundle.info.num_classes
