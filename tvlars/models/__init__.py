"""Models: CIFAR/ImageNet-stem ResNets and a small MLP. Builders receive dataset facts from the loop."""

from tvlars.models.mlp import MLP
from tvlars.models.resnet import ResNet

__all__ = ["MLP", "ResNet"]
