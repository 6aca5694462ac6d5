"""Classification transforms: output contract, determinism of the test transform, train-time randomness."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2

from tvlars.data import DatasetInfo, TransformedDataset, classification_transforms, load_synthetic

CIFAR_LIKE = DatasetInfo("cifar_like", 10, 3, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
IMAGENET_LIKE = DatasetInfo("imagenet_like", 10, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _random_image(channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (channels, size, size), generator=torch.Generator().manual_seed(seed)).byte()


def test_test_transform_normalises_deterministically() -> None:
    _, test = classification_transforms(CIFAR_LIKE)
    image = _random_image()
    out = test(image)
    assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, 32, 32)
    assert torch.equal(out, test(image))
    mean, std = torch.tensor(CIFAR_LIKE.mean).view(3, 1, 1), torch.tensor(CIFAR_LIKE.std).view(3, 1, 1)
    torch.testing.assert_close(out, (image.float() / 255 - mean) / std)


def test_pil_and_tensor_inputs_agree() -> None:
    train, test = classification_transforms(CIFAR_LIKE)
    image = _random_image()
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    torch.testing.assert_close(test(pil), test(image))
    assert train(pil).shape == (3, 32, 32) and train(pil).dtype == torch.float32


def test_train_transform_is_random_and_keeps_shape() -> None:
    train, test = classification_transforms(CIFAR_LIKE, crop_padding=4, hflip=True)
    image = _random_image()
    torch.manual_seed(0)
    outs = [train(image) for _ in range(8)]
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.float32 for o in outs)
    assert sum(not torch.equal(o, test(image)) for o in outs) >= 6


def test_augment_options_build_the_expected_pipeline() -> None:
    def kinds(transform: v2.Compose) -> list[type]:
        return [type(t) for t in transform.transforms]

    train, _ = classification_transforms(CIFAR_LIKE, crop_padding=0, hflip=False)
    assert not {v2.RandomCrop, v2.RandomHorizontalFlip, v2.RandomRotation} & set(kinds(train))
    train, _ = classification_transforms(CIFAR_LIKE, crop_padding=4, hflip=True, rotation=15.0)
    assert {v2.RandomCrop, v2.RandomHorizontalFlip, v2.RandomRotation} <= set(kinds(train))
    rotation = next(t for t in train.transforms if isinstance(t, v2.RandomRotation))
    assert list(rotation.degrees) == [-15.0, 15.0]
    train, _ = classification_transforms(IMAGENET_LIKE, random_resized_crop=True)
    assert v2.RandomResizedCrop in kinds(train) and v2.RandomCrop not in kinds(train)


def test_rotation_only_changes_images() -> None:
    train, test = classification_transforms(CIFAR_LIKE, crop_padding=0, hflip=False, rotation=30.0)
    image = _random_image()
    torch.manual_seed(0)
    assert sum(not torch.equal(train(image), test(image)) for _ in range(5)) >= 4


def test_large_images_resize_and_centre_crop() -> None:
    train, test = classification_transforms(IMAGENET_LIKE, random_resized_crop=True)
    pil = Image.fromarray(_random_image(size=300).permute(1, 2, 0).numpy()).resize((300, 260))
    assert test(pil).shape == (3, 224, 224) and torch.equal(test(pil), test(pil))
    assert train(pil).shape == (3, 224, 224)
    train, _ = classification_transforms(IMAGENET_LIKE, crop_padding=0)  # no RRC: resize then random crop
    assert train(pil).shape == (3, 224, 224)


def test_transformed_dataset() -> None:
    bundle = load_synthetic(num_train=10, num_test=4, channels=1, image_size=8)
    _, test = classification_transforms(bundle.info)
    dataset = TransformedDataset(bundle.test, test)
    image, label = dataset[3]
    assert len(dataset) == 4 and label == bundle.test[3][1]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    batch, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch.shape == (4, 1, 8, 8) and labels.tolist() == bundle.test.labels.tolist()
