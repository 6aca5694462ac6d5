"""Fashion-MNIST: the real Debian files, the torchvision raw-folder fallback, and the missing-data error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tvlars.data import load_fashion_mnist
from tvlars.data.fake import fake_label, fake_pixels
from tvlars.data.fashion_mnist import write_fake_fashion_mnist
from tvlars.errors import UserError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def test_real_fashion_mnist() -> None:
    assert SYSTEM_DIR.is_dir(), "install the data: apt-get install dataset-fashion-mnist"
    bundle = load_fashion_mnist("/nonexistent-data-root")
    assert (len(bundle.train), len(bundle.test)) == (60000, 10000)
    image, label = bundle.train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and isinstance(label, int)
    assert bundle.train.images.shape == (60000, 1, 28, 28) and bundle.train.labels.dtype == torch.int64
    assert bundle.train.labels.bincount().tolist() == [6000] * 10  # labels 0..9, balanced
    assert bundle.test.labels.bincount().tolist() == [1000] * 10
    mean = bundle.train.images.float().div(255).mean().item()
    assert mean == pytest.approx(bundle.info.mean[0], abs=1e-3)
    assert (bundle.info.num_classes, bundle.info.in_channels, bundle.info.image_size) == (10, 1, 28)


@pytest.mark.parametrize("compress", [True, False])
def test_torchvision_raw_folder_fallback(tmp_path: Path, compress: bool) -> None:
    keys = write_fake_fashion_mnist(tmp_path, n_train=12, n_test=6, compress=compress)
    bundle = load_fashion_mnist(str(tmp_path), **keys)
    assert (len(bundle.train), len(bundle.test)) == (12, 6)
    image, label = bundle.test[2]
    assert torch.equal(image, torch.from_numpy(fake_pixels(14, 1, 28))) and label == fake_label(14, 10)


def test_missing_data_names_both_paths_and_fixes(tmp_path: Path) -> None:
    system = tmp_path / "system"
    with pytest.raises(UserError) as err:
        load_fashion_mnist(str(tmp_path / "root"), system_dir=str(system))
    message = str(err.value)
    assert "\n" not in message and str(system) in message
    assert str(tmp_path / "root" / "FashionMNIST" / "raw") in message
    assert "apt-get install dataset-fashion-mnist" in message and "dataset.download=true" in message


def test_truncated_file_is_a_user_error(tmp_path: Path) -> None:
    write_fake_fashion_mnist(tmp_path, compress=False)
    images = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(UserError, match=re.escape(str(images)) + " is truncated"):
        load_fashion_mnist(str(tmp_path), system_dir=str(tmp_path / "none"))
