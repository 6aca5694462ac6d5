"""The validation split: fixed, class-stratified, disjoint from what is trained on, the same for every seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from tests.helpers import compose_config, tiny
from tvlars.build import split_data
from tvlars.config import instantiate_node
from tvlars.data import TensorImageDataset
from tvlars.data.splits import labels_of, subset, validation_split
from tvlars.errors import UserError


def _dataset(counts: list[int]) -> TensorImageDataset:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(9))]
    images = torch.arange(len(labels), dtype=torch.int64).remainder(256).to(torch.uint8).view(-1, 1, 1, 1)
    return TensorImageDataset(images.expand(-1, 1, 2, 2).contiguous(), labels)


def test_split_is_stratified_disjoint_and_covers_the_training_set() -> None:
    data = _dataset([600, 300, 100])
    train, val = validation_split(data, 100)
    assert len(val) == 100 and len(train) == 900
    assert set(train.indices).isdisjoint(val.indices) and set(train.indices) | set(val.indices) == set(range(1000))
    assert torch.bincount(labels_of(val)).tolist() == [60, 30, 10]  # proportional to the class counts


def test_rounding_gives_exactly_the_requested_size() -> None:
    train, val = validation_split(_dataset([7, 7, 7]), 10)  # 3.33 per class: largest remainders, lower class first
    assert torch.bincount(labels_of(val), minlength=3).tolist() == [4, 3, 3]
    assert len(train) == 11


def test_split_is_fixed() -> None:
    first = validation_split(_dataset([50, 50]), 20)[1].indices
    assert validation_split(_dataset([50, 50]), 20)[1].indices == first


def test_zero_keeps_the_whole_training_set() -> None:
    data = _dataset([5, 5])
    train, val = validation_split(data, 0)
    assert train is data and len(val) == 0


@pytest.mark.parametrize("size", [-1, 10, 11])
def test_a_split_as_large_as_the_training_set_is_refused(size: int) -> None:
    with pytest.raises(UserError, match=r"dataset.val_size=.* smaller than the training set \(10 images\)"):
        validation_split(_dataset([5, 5]), size)


def test_labels_come_from_targets_and_subsets() -> None:
    class Folder(torch.utils.data.Dataset):
        targets = [2, 0, 1, 1]

        def __len__(self) -> int:
            return 4

    assert labels_of(Subset(Folder(), [3, 0])).tolist() == [1, 2]


def test_subset_is_fixed_and_of_its_size() -> None:
    data = _dataset([10, 10])
    assert subset(data, 5).indices == subset(data, 5).indices and len(subset(data, 5)) == 5
    assert subset(data, 0) is data and subset(data, 50) is data


def test_build_holds_out_validation_before_the_training_subset(tmp_path: Path) -> None:
    """``train_subset`` draws from what is left after the validation split: no validation image is trained on,
    whatever the seed."""
    cfg = compose_config(tiny("dataset.val_size=64", "train_subset=100", "val_subset=32"))
    raw = instantiate_node(cfg.dataset, "dataset", skip=("augment", "val_size"))
    data = split_data(cfg, raw)
    assert len(data.val) == 32 and len(data.train) == 100
    trained = {int(data.train.dataset.indices[i]) for i in data.train.indices}
    held = {int(data.val.dataset.indices[i]) for i in data.val.indices}
    assert trained.isdisjoint(held)
    assert split_data(compose_config(tiny("dataset.val_size=64", "train_subset=100", "seed=7")), raw).train.indices \
        == data.train.indices
