"""CIFAR loaders against fakes in the real formats: pickles (with and without MD5 checks) and JPEG folders."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from tvlars.data import DataBundle, load_cifar10, load_cifar100
from tvlars.data.cifar import CIFAR10_CLASSES, write_fake_cifar10, write_fake_cifar100
from tvlars.data.fake import class_colour, fake_label, fake_pixels, write_class_folders
from tvlars.errors import UserError


def _assert_round_trip(bundle: DataBundle, n_train: int, n_test: int, num_classes: int) -> None:
    assert (len(bundle.train), len(bundle.test)) == (n_train, n_test)
    assert bundle.train.images.shape == (n_train, 3, 32, 32) and bundle.train.images.dtype == torch.uint8
    assert bundle.train.labels.dtype == torch.int64
    for split, offset in ((bundle.train, 0), (bundle.test, n_train)):
        for i in (0, 1, len(split) - 1):
            image, label = split[i]
            assert isinstance(label, int) and label == fake_label(offset + i, num_classes)
            # Exact pixels, so a channel-order (R,G,B planes) or H/W transpose bug fails here.
            assert torch.equal(image, torch.from_numpy(fake_pixels(offset + i)))


def test_fake_cifar10_pickles_load_without_checksums(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path, n_train=23, n_test=7)  # 23 splits unevenly over the 5 train batches
    bundle = load_cifar10(str(tmp_path), format="pickle", verify_checksums=False)
    _assert_round_trip(bundle, 23, 7, 10)
    assert bundle.info.name == "cifar10" and bundle.info.num_classes == 10 and bundle.info.image_size == 32
    assert bundle.info.mean == (0.4914, 0.4822, 0.4465) and bundle.info.std == (0.2470, 0.2435, 0.2616)


def test_fake_cifar100_pickles_load_fine_labels(tmp_path: Path) -> None:
    write_fake_cifar100(tmp_path, n_train=30, n_test=9)
    bundle = load_cifar100(str(tmp_path), verify_checksums=False)
    _assert_round_trip(bundle, 30, 9, 100)
    assert bundle.train.labels.max() > 19  # fine labels (0..99), not the 20 coarse ones
    assert bundle.info.num_classes == 100 and bundle.info.mean == (0.5071, 0.4865, 0.4409)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_default_checksum_verification_rejects_fakes(tmp_path: Path, dataset: str) -> None:
    if dataset == "cifar10":
        write_fake_cifar10(tmp_path)
        load = lambda: load_cifar10(str(tmp_path))  # auto format → pickles, verify_checksums defaults on
    else:
        write_fake_cifar100(tmp_path)
        load = lambda: load_cifar100(str(tmp_path))
    with pytest.raises(UserError, match="MD5.*dataset.verify_checksums=false"):
        load()


def test_auto_format_prefers_pickles_then_jpeg_folder(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path, n_train=10, n_test=10, format="imagefolder")
    assert isinstance(load_cifar10(str(tmp_path)).train[0][0], Image.Image)
    write_fake_cifar10(tmp_path, n_train=5, n_test=5)
    assert isinstance(load_cifar10(str(tmp_path), verify_checksums=False).train[0][0], torch.Tensor)


def test_missing_cifar10_names_both_paths_and_fixes(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_cifar10(str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message and str(tmp_path / "cifar10-jpeg") in message
    assert "dataset.download=true" in message and "data_root" in message


@pytest.mark.parametrize("fmt", ["pickle", "imagefolder"])
def test_missing_cifar10_explicit_format_names_path(tmp_path: Path, fmt: str) -> None:
    expected = tmp_path / ("cifar-10-batches-py" if fmt == "pickle" else "cifar10-jpeg")
    with pytest.raises(UserError, match=re.escape(str(expected))):
        load_cifar10(str(tmp_path), format=fmt)


def test_missing_cifar100_names_path(tmp_path: Path) -> None:
    expected = re.escape(str(tmp_path / "cifar-100-python")) + ".*dataset.download=true"
    with pytest.raises(UserError, match=expected):
        load_cifar100(str(tmp_path))


def test_bad_format_value(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dataset.format.*'auto', 'pickle', 'imagefolder'"):
        load_cifar10(str(tmp_path), format="jpeg")


def test_jpeg_folder_loads_in_canonical_class_order(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path, n_train=20, n_test=20, format="imagefolder")
    bundle = load_cifar10(str(tmp_path), format="imagefolder")
    assert (len(bundle.train), len(bundle.test)) == (20, 20)
    assert bundle.train.classes == list(CIFAR10_CLASSES)
    for split in (bundle.train, bundle.test):
        for i in range(0, 20, 3):
            image, label = split[i]
            assert image.mode == "RGB" and image.size == (32, 32)
            pixel = image.getpixel((16, 16))
            assert all(abs(a - b) <= 8 for a, b in zip(pixel, class_colour(label), strict=True))


def test_jpeg_folder_with_wrong_class_names_is_rejected(tmp_path: Path) -> None:
    classes = [*CIFAR10_CLASSES[:-1], "lorry"]
    for split in ("train", "test"):
        write_class_folders(tmp_path / "cifar10-jpeg" / split, classes, n_per_class=1, size=32)
    with pytest.raises(UserError, match="lorry.*not the CIFAR-10 classes"):
        load_cifar10(str(tmp_path), format="imagefolder")


def test_jpeg_folder_with_missing_test_split_names_it(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "cifar10-jpeg" / "train", CIFAR10_CLASSES, n_per_class=1, size=32)
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "cifar10-jpeg" / "test"))):
        load_cifar10(str(tmp_path))


@pytest.mark.skipif(
    not os.environ.get("TVLARS_CIFAR10_JPEG"),
    reason="real-data check: set TVLARS_CIFAR10_JPEG to a root holding cifar10-jpeg/ (docs/data.md)",
)
def test_real_cifar10_jpeg_export() -> None:
    bundle = load_cifar10(os.environ["TVLARS_CIFAR10_JPEG"], format="auto")
    assert (len(bundle.train), len(bundle.test)) == (50000, 10000)
    assert torch.bincount(torch.tensor(bundle.test.targets)).tolist() == [1000] * 10
    image, label = bundle.train[0]
    assert image.size == (32, 32) and image.mode == "RGB" and label == 0
