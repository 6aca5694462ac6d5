"""Damaged or half-set-up dataset files: each ends in one `error:` line naming the file and the repair.

Each case writes a fake in the real format into a tmp dir, damages one file, and checks the loader's UserError
(and, for a few, the CLI: exit code 2, one `error:` line, no traceback).
"""

from __future__ import annotations

import hashlib
import pickle
import re
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import Subset
from torchvision.datasets import CIFAR10, CIFAR100

from tests.helpers import run_cli, tiny
from tvlars.data import load_cifar10, load_cifar100, load_fashion_mnist, load_imagenet, load_tinyimagenet
from tvlars.data.cifar import write_fake_cifar10, write_fake_cifar100
from tvlars.data.fashion_mnist import write_fake_fashion_mnist
from tvlars.data.imagenet import write_fake_imagenet
from tvlars.data.loaders import in_memory
from tvlars.data.tinyimagenet import write_fake_tinyimagenet
from tvlars.errors import UserError


def _error(load: Callable[[], object]) -> str:
    """The one-line message of the UserError ``load()`` raises."""
    with pytest.raises(UserError) as err:
        load()
    # Drop the frames' locals now: a DataLoader iterator left to the cycle collector waits ~10 s for its workers.
    traceback.clear_frames(err.tb)
    message = str(err.value)
    assert "\n" not in message, message
    return message


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _assert_one_error_line(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


# --- Fashion-MNIST IDX files ----------------------------------------------------------------------------------

def _fmnist(tmp_path: Path, compress: bool = True) -> tuple[Path, Callable[[], object]]:
    keys = write_fake_fashion_mnist(tmp_path, compress=compress)
    return tmp_path / "FashionMNIST" / "raw", lambda: load_fashion_mnist(str(tmp_path), **keys)


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda p: _truncate(p), "EOFError: Compressed file ended before the end-of-stream marker"),
    (lambda p: p.write_bytes(b"\x00garbage" * 20), "BadGzipFile: Not a gzipped file"),
    (lambda p: p.write_bytes(p.read_bytes()[:20] + b"\xff" * 40 + p.read_bytes()[60:]), "error"),  # corrupt stream
    (lambda p: p.write_bytes(b""), "is not an unsigned-byte IDX file"),
])
def test_damaged_gz_idx_file_is_named_with_the_fix(tmp_path: Path, damage, reason: str) -> None:
    raw, load = _fmnist(tmp_path)
    path = raw / "train-images-idx3-ubyte.gz"
    damage(path)
    message = _error(load)
    assert message.startswith(str(path)) and reason in message
    assert message.endswith(f"delete {raw} and set dataset.download=true (or run `make data`)")


@pytest.mark.parametrize(("content", "reason"), [
    (bytes([0, 0, 8, 3, 0, 0]), "is truncated (its header declares 3 dimensions)"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2]), "is truncated (2 values for shape (4,))"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "is too long (2 values for shape (1,))"),
    (bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 1]), "is not an unsigned-byte IDX file"),  # float IDX
])
def test_malformed_uncompressed_idx_file(tmp_path: Path, content: bytes, reason: str) -> None:
    raw, load = _fmnist(tmp_path, compress=False)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(content)
    assert reason in _error(load)


def test_labels_outside_the_ten_classes(tmp_path: Path) -> None:
    raw, load = _fmnist(tmp_path, compress=False)
    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + bytes([10]))
    assert _error(load).startswith(f"{labels} holds labels above 9")


def test_damaged_system_copy_says_reinstall_the_package(tmp_path: Path) -> None:
    write_fake_fashion_mnist(tmp_path / "system-root")
    system = tmp_path / "system-root" / "FashionMNIST" / "raw"
    _truncate(system / "t10k-images-idx3-ubyte.gz")
    message = _error(lambda: load_fashion_mnist(str(tmp_path / "root"), system_dir=str(system)))
    assert message.startswith(str(system / "t10k-images-idx3-ubyte.gz"))
    assert message.endswith("reinstall it with `apt-get install --reinstall dataset-fashion-mnist`")


def test_cli_truncated_gz_is_one_error_line(tmp_path: Path) -> None:
    raw, _ = _fmnist(tmp_path)
    _truncate(raw / "train-labels-idx1-ubyte.gz")
    result = run_cli(tiny(f"out_dir={tmp_path}", "dataset=fashion_mnist", f"data_root={tmp_path}",
                          f"dataset.system_dir={tmp_path / 'none'}"))
    _assert_one_error_line(result, f"error: {raw / 'train-labels-idx1-ubyte.gz'} is damaged", "dataset.download=true")


# --- CIFAR pickles ---------------------------------------------------------------------------------------------

CIFARS = {
    "cifar10": (write_fake_cifar10, load_cifar10, CIFAR10, "data_batch_3"),
    "cifar100": (write_fake_cifar100, load_cifar100, CIFAR100, "train"),
}


@pytest.mark.parametrize("name", sorted(CIFARS))
@pytest.mark.parametrize(("damage", "reason"), [
    (lambda p: p.write_bytes(b"garbage, not a pickle" * 5), "UnpicklingError"),
    (lambda p: _truncate(p), "UnpicklingError: pickle data was truncated"),
    (lambda p: p.write_bytes(b""), "EOFError: Ran out of input"),
    (lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), "TypeError"),
    (lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1],
                                           "fine_labels": [0, 1]})), "are not N×3072 and N"),
])
def test_damaged_pickle_without_checksums_is_named_with_the_fix(tmp_path: Path, name: str, damage,
                                                                reason: str) -> None:
    write, load, spec, damaged = CIFARS[name]
    write(tmp_path)
    folder = tmp_path / spec.base_folder
    damage(folder / damaged)
    message = _error(lambda: load(str(tmp_path), verify_checksums=False))
    assert message.startswith(str(folder / damaged)) and reason in message
    assert message.endswith(f"delete {folder} and set dataset.download=true, or extract the official "
                            f"{spec.filename} into {tmp_path} again")


@pytest.mark.parametrize("name", sorted(CIFARS))
def test_labels_outside_the_classes_name_the_batch(tmp_path: Path, name: str) -> None:
    write, load, spec, damaged = CIFARS[name]
    write(tmp_path)
    path = tmp_path / spec.base_folder / damaged
    batch = pickle.loads(path.read_bytes())
    key = "labels" if name == "cifar10" else "fine_labels"
    batch[key][0] = 100
    path.write_bytes(pickle.dumps(batch))
    assert re.match(re.escape(f"{path}: {key} outside 0..") + r"\d+; delete", _error(lambda: load(str(tmp_path),
                                                                                               verify_checksums=False)))


@pytest.mark.parametrize("name", sorted(CIFARS))
def test_checksum_failure_names_the_damaged_file(tmp_path: Path, name: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With the fakes' own MD5s standing in for the official ones, only the damaged file fails the check."""
    write, load, spec, damaged = CIFARS[name]
    write(tmp_path)
    folder = tmp_path / spec.base_folder

    def md5s(entries: list) -> list:
        return [[file, hashlib.md5((folder / file).read_bytes()).hexdigest()] for file, _ in entries]

    monkeypatch.setattr(spec, "train_list", md5s(spec.train_list))
    monkeypatch.setattr(spec, "test_list", md5s(spec.test_list))
    monkeypatch.setattr(spec, "meta", {**spec.meta, "md5": md5s([[spec.meta["filename"], ""]])[0][1]})
    assert len(load(str(tmp_path)).train) == 50  # checksums on, all files match
    _truncate(folder / damaged, keep=0.9)
    message = _error(lambda: load(str(tmp_path)))
    assert message.startswith(f"{folder / damaged} fails torchvision's MD5 check")
    assert f"delete {folder} and set dataset.download=true" in message and "dataset.verify_checksums=false" in message


def test_missing_batch_is_named(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    assert f"no {tmp_path / 'cifar-10-batches-py' / 'test_batch'}" in _error(
        lambda: load_cifar10(str(tmp_path), verify_checksums=False))


def test_cli_garbage_pickle_is_one_error_line(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path)
    damaged = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    damaged.write_bytes(b"garbage")
    result = run_cli(tiny(f"out_dir={tmp_path}", "dataset=cifar10", f"data_root={tmp_path}",
                          "dataset.verify_checksums=false"))
    _assert_one_error_line(result, f"error: {damaged} is not a readable CIFAR batch", "dataset.download=true")


# --- image folders: CIFAR-10 export, Tiny-ImageNet, ImageNet -----------------------------------------------

def _cifar_jpeg(tmp_path: Path) -> tuple[Path, object]:
    write_fake_cifar10(tmp_path, n_train=20, n_test=10, format="imagefolder")
    return tmp_path / "cifar10-jpeg", load_cifar10(str(tmp_path))


IMAGE_DAMAGE = [
    pytest.param(lambda p: _truncate(p), "OSError", id="truncated"),
    pytest.param(lambda p: p.write_bytes(b"not an image" * 10), "UnidentifiedImageError", id="garbage"),
]


@pytest.mark.parametrize(("damage", "reason"), IMAGE_DAMAGE)
@pytest.mark.parametrize("workers", [0, 1])
def test_damaged_image_in_cifar10_export_both_paths(tmp_path: Path, damage, reason: str, workers: int) -> None:
    base, bundle = _cifar_jpeg(tmp_path)
    index = 5
    path = Path(bundle.train.samples[index][0])
    damage(path)
    fix = f"extract cifar10-jpeg.tar.gz into {tmp_path}"
    sampler = _error(lambda: bundle.train[index])  # the sampler path opens images per item
    device = _error(lambda: in_memory(bundle.train, workers))  # the device path decodes once, in worker processes
    for message in (sampler, device):
        assert message.startswith(f"{path} is not a readable image ({reason}") and fix in message


def test_damaged_png_in_tinyimagenet_val_both_paths(tmp_path: Path) -> None:
    write_fake_tinyimagenet(tmp_path)
    bundle = load_tinyimagenet(str(tmp_path))
    path = Path(bundle.test.samples[3][0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    for load in (lambda: bundle.test[3], lambda: in_memory(bundle.test, workers=1)):
        message = _error(load)
        assert message.startswith(f"{path} is not a readable image")
        assert message.endswith(f"re-extract tiny-imagenet-200.zip into {tmp_path}")


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    base, _ = _cifar_jpeg(tmp_path)
    for image in (base / "test" / "cat").iterdir():
        image.unlink()
    (base / "test" / "cat" / "notes.txt").write_text("not an image")
    assert _error(lambda: load_cifar10(str(tmp_path))).startswith(f"{base / 'test' / 'cat'} holds no image files")


def test_split_without_class_folders_is_named(tmp_path: Path) -> None:
    base, _ = _cifar_jpeg(tmp_path)
    for folder in (base / "test").iterdir():
        for image in folder.iterdir():
            image.unlink()
        folder.rmdir()
    assert _error(lambda: load_cifar10(str(tmp_path))).startswith(f"{base / 'test'} holds no class folders")


def test_cli_damaged_jpeg_device_path_is_one_error_line(tmp_path: Path) -> None:
    _, bundle = _cifar_jpeg(tmp_path)
    path = Path(bundle.test.samples[2][0])
    _truncate(path)
    result = run_cli(tiny(f"out_dir={tmp_path}", "dataset=cifar10", f"data_root={tmp_path}", "batch_size=8",
                          "num_workers=1", "dataset.val_size=0"))
    _assert_one_error_line(result, f"error: {path} is not a readable image", "cifar10-jpeg.tar.gz")


@pytest.mark.slow
def test_cli_damaged_jpeg_sampler_path_is_one_error_line(tmp_path: Path) -> None:
    """On the sampler path images are read during training, in a DataLoader worker: the run stops with the line."""
    _, bundle = _cifar_jpeg(tmp_path)
    path = Path(bundle.train.samples[7][0])
    _truncate(path)
    result = run_cli(tiny(f"out_dir={tmp_path}", f"run_dir={tmp_path / 'run'}", "dataset=cifar10",
                          f"data_root={tmp_path}", "batch_size=4", "data.on_device=false", "num_workers=1",
                          "dataset.val_size=0"))
    _assert_one_error_line(result, f"error: {path} is not a readable image", "cifar10-jpeg.tar.gz")


# --- Tiny-ImageNet and ImageNet layouts -------------------------------------------------------------------------

def _tiny(tmp_path: Path) -> Path:
    write_fake_tinyimagenet(tmp_path)
    return tmp_path / "tiny-imagenet-200"


def test_tinyimagenet_missing_val_annotations(tmp_path: Path) -> None:
    annotations = _tiny(tmp_path) / "val" / "val_annotations.txt"
    annotations.unlink()
    message = _error(lambda: load_tinyimagenet(str(tmp_path)))
    assert message == f"{annotations} not found; download http://cs231n.stanford.edu/tiny-imagenet-200.zip and " \
                      f"unzip it into {tmp_path}"


def test_tinyimagenet_val_annotations_naming_missing_files(tmp_path: Path) -> None:
    images = _tiny(tmp_path) / "val" / "images"
    (images / "val_7.JPEG").unlink()
    (images / "val_9.JPEG").unlink()
    message = _error(lambda: load_tinyimagenet(str(tmp_path)))
    assert message.startswith(f"{images.parent / 'val_annotations.txt'} names 2 files missing from {images} "
                              "(e.g. val_7.JPEG)")


def test_tinyimagenet_wnid_without_train_folder(tmp_path: Path) -> None:
    base = _tiny(tmp_path)
    (base / "wnids.txt").write_text((base / "wnids.txt").read_text() + "n00000001\n")
    assert _error(lambda: load_tinyimagenet(str(tmp_path))).startswith(
        f"{base / 'train' / 'n00000001' / 'images'} not found")


def test_tinyimagenet_garbled_wnids(tmp_path: Path) -> None:
    wnids = _tiny(tmp_path) / "wnids.txt"
    wnids.write_bytes(b"\xff\xfe\x00garbage")
    assert _error(lambda: load_tinyimagenet(str(tmp_path))) == (
        f"{wnids} is not a readable text file (UnicodeDecodeError); re-extract tiny-imagenet-200.zip into {tmp_path}")


def test_tinyimagenet_empty_train_class(tmp_path: Path) -> None:
    images = _tiny(tmp_path) / "train" / "n01443537" / "images"
    for image in images.iterdir():
        image.unlink()
    assert _error(lambda: load_tinyimagenet(str(tmp_path))).startswith(f"{images} holds no images")


def test_imagenet_train_holding_class_archives(tmp_path: Path) -> None:
    train = tmp_path / "imagenet" / "train"
    train.mkdir(parents=True)
    for wnid in ("n01440764", "n01443537"):
        (train / f"{wnid}.tar").write_bytes(b"")
    message = _error(lambda: load_imagenet(str(tmp_path)))
    assert message.startswith(f"{train} holds 2 .tar archives (e.g. n01440764.tar) instead of <wnid>/ folders")
    assert 'tar -xf "$f" -C "${f%.tar}"' in message


def test_imagenet_val_lacking_a_class_names_it(tmp_path: Path) -> None:
    write_fake_imagenet(tmp_path, wnids=("n01440764", "n01443537", "n01484850"))
    for image in (tmp_path / "imagenet" / "val" / "n01443537").iterdir():
        image.unlink()
    (tmp_path / "imagenet" / "val" / "n01443537").rmdir()
    assert _error(lambda: load_imagenet(str(tmp_path))).startswith(
        f"{tmp_path / 'imagenet' / 'val'} lacks class folder n01443537 (2 val vs 3 train classes)")


def test_imagenet_empty_class_and_damaged_image(tmp_path: Path) -> None:
    write_fake_imagenet(tmp_path, n_train=6, n_test=3, wnids=("n01440764", "n01443537", "n01484850"))
    bundle = load_imagenet(str(tmp_path))
    path = Path(bundle.train.samples[1][0])
    _truncate(path)
    assert _error(lambda: bundle.train[1]).startswith(f"{path} is not a readable image")
    empty = tmp_path / "imagenet" / "val" / "n01484850"
    for image in empty.iterdir():
        image.unlink()
    assert _error(lambda: load_imagenet(str(tmp_path))).startswith(f"{empty} holds no image files")



@pytest.mark.parametrize("workers", [0, 1])
def test_image_of_another_size_names_its_file_on_the_device_path(tmp_path: Path, workers: int) -> None:
    write_fake_tinyimagenet(tmp_path)
    bundle = load_tinyimagenet(str(tmp_path))
    odd, first = bundle.train.samples[4][0], bundle.train.samples[0][0]
    Image.new("RGB", (32, 48)).save(odd, format="JPEG")
    message = _error(lambda: in_memory(Subset(bundle.train, [0, 2, 4]), workers))
    assert message == (f"{odd} is (3, 48, 32) but {first} is (3, 64, 64) (C×H×W): data.on_device needs images of "
                       "one size; set data.on_device=false")
