"""Tiny-ImageNet and ImageNet loaders against fake trees in the official layouts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from tvlars.data import load_imagenet, load_tinyimagenet
from tvlars.data.fake import FAKE_WNIDS, class_colour, write_class_folders
from tvlars.data.imagenet import write_fake_imagenet
from tvlars.data.tinyimagenet import write_fake_tinyimagenet
from tvlars.errors import UserError


def _colour_matches(image: Image.Image, label: int) -> bool:
    return all(abs(a - b) <= 8 for a, b in zip(image.getpixel((32, 32)), class_colour(label), strict=True))


def test_tinyimagenet_train_and_val_labels(tmp_path: Path) -> None:
    write_fake_tinyimagenet(tmp_path, n_train=15, n_test=10)
    bundle = load_tinyimagenet(str(tmp_path))
    info = bundle.info
    assert (info.name, info.num_classes, info.in_channels, info.image_size) == ("tinyimagenet", 5, 3, 64)
    assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
    assert (len(bundle.train), len(bundle.test)) == (15, 10)
    assert sorted(set(bundle.train.targets)) == sorted(set(bundle.test.targets)) == list(range(5))
    grey_file = f"{FAKE_WNIDS[0]}_0.JPEG"  # the fake's one greyscale image
    for split in (bundle.train, bundle.test):
        for i in range(len(split)):
            image, label = split[i]
            assert image.mode == "RGB" and image.size == (64, 64)  # greyscale files come back as RGB
            if not split.samples[i][0].endswith(grey_file):
                assert _colour_matches(image, label)  # label = index of the wnid in *sorted* order
    assert bundle.train.samples[0][0].endswith(f"{sorted(FAKE_WNIDS)[0]}_0.JPEG")


def test_tinyimagenet_index_does_not_open_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_tinyimagenet(tmp_path)
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("image opened while indexing"))
    assert len(load_tinyimagenet(str(tmp_path)).train) == 15


def test_tinyimagenet_missing_names_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "tiny-imagenet-200" / "wnids.txt"))):
        load_tinyimagenet(str(tmp_path))


def test_tinyimagenet_unknown_val_wnid(tmp_path: Path) -> None:
    write_fake_tinyimagenet(tmp_path)
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_99.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(UserError, match=r"val_annotations.txt:11"):
        load_tinyimagenet(str(tmp_path))


def test_imagenet_folder_loads(tmp_path: Path) -> None:
    wnids = ["n01440764", "n01443537", "n01484850"]
    write_fake_imagenet(tmp_path, n_train=6, n_test=6, wnids=wnids, size=64)
    bundle = load_imagenet(str(tmp_path))
    assert (bundle.info.name, bundle.info.num_classes, bundle.info.image_size) == ("imagenet", 3, 224)
    assert (len(bundle.train), len(bundle.test)) == (6, 6) and bundle.test.classes == wnids
    image, label = bundle.test[5]
    assert label == 2 and image.mode == "RGB" and _colour_matches(image, label)


def test_imagenet_loose_val_files_point_at_valprep(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "imagenet" / "train", ["n01440764"], n_per_class=1, size=8, ext="JPEG")
    (tmp_path / "imagenet" / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(UserError, match="loose images.*valprep.sh"):
        load_imagenet(str(tmp_path))


def test_imagenet_missing_names_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "imagenet" / "train")) + " not found"):
        load_imagenet(str(tmp_path))
