"""The dataset registry: sizes without loading, lookups by name / `_target_` / config, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import compose_config
from tvlars.data import DATASETS, load_cifar10, register_dataset, registered, train_size, write_fake
from tvlars.errors import UserError


@pytest.mark.parametrize(("name", "size"), [("cifar10", 50_000), ("cifar100", 50_000), ("fashion_mnist", 60_000),
                                            ("tinyimagenet", 100_000), ("imagenet", 1_281_167)])
def test_train_size_of_the_composed_configs(name: str, size: int) -> None:
    assert train_size(compose_config([f"dataset={name}"]).dataset) == size


def test_synthetic_size_follows_num_train_or_the_loader_default() -> None:
    assert train_size(compose_config(["dataset=synthetic", "dataset.num_train=300"]).dataset) == 300
    assert train_size({"_target_": "tvlars.data.load_synthetic"}) == 2048  # load_synthetic's default


def test_lookup_by_name_target_module_path_and_config() -> None:
    entry = registered("cifar10")
    assert entry.load is load_cifar10
    assert registered("tvlars.data.load_cifar10") is entry
    assert registered("tvlars.data.cifar.load_cifar10") is entry
    assert registered({"_target_": "tvlars.data.load_cifar10", "root": "x"}) is entry


def test_an_unregistered_loader_has_no_size_and_says_what_to_declare() -> None:
    with pytest.raises(UserError, match=r"dataset._target_=tvlars.data.DataBundle is not a registered dataset.*"
                                        r"@register_dataset\(name, train_size="):
        train_size({"_target_": "tvlars.data.DataBundle"})
    with pytest.raises(UserError, match=r"dataset._target_=tvlars.data.load_mnist cannot be imported.*cifar10"):
        train_size({"_target_": "tvlars.data.load_mnist"})
    with pytest.raises(UserError, match="unknown dataset 'mnist'; registered datasets: cifar10, cifar100"):
        write_fake("mnist", "/tmp")


def test_registering_a_name_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tvlars.data.registry.DATASETS", dict(DATASETS))
    with pytest.raises(ValueError, match="'cifar10' is registered twice"):
        register_dataset("cifar10", train_size=1, write_fake=lambda root, n_train, n_test: {})(load_cifar10)


def test_a_new_dataset_is_one_decorated_loader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("tvlars.data.registry.DATASETS", {})
    written = []

    @register_dataset("toy", train_size="n", write_fake=lambda root, n_train, n_test: written.append(root) or {"n": 3})
    def load_toy(n: int = 7) -> None: ...

    from tvlars.data import registry

    assert registry.DATASETS["toy"].load is load_toy
    assert registry.write_fake("toy", tmp_path) == {"n": 3} and written == [tmp_path]
    assert registry.train_size({"_target_": "toy"}) == 7 and registry.train_size({"_target_": "toy", "n": 5}) == 5


def test_smoke_profile_writes_a_fake_of_every_registered_dataset_once(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tvlars.tables import reproduce

    reproduce.fake_data(tmp_path)
    assert sorted(p.stem for p in tmp_path.glob("*.done")) == sorted(DATASETS)
    assert (tmp_path / "tiny-imagenet-200" / "wnids.txt").is_file() and (tmp_path / "imagenet" / "val").is_dir()
    monkeypatch.setattr(reproduce, "write_fake", lambda *a, **k: pytest.fail("fake written twice"))
    reproduce.fake_data(tmp_path)
