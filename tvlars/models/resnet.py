"""ResNet-18/34/50 with a CIFAR or ImageNet stem, a width multiplier and any number of input channels.

Built from torchvision's ``BasicBlock`` and ``Bottleneck`` so the residual blocks are the standard ones;
only the stem and the stage widths are ours.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

_LAYOUT: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}
STEMS = ("cifar", "imagenet")
# Weight initialisations of conv and linear weights. "default" is torchvision's ResNet scheme (Kaiming-normal,
# fan-out, for convs; PyTorch's default for the classifier); the others are the released code's --winit choices
# (whose init loop was a no-op there, so its runs all used torchvision's default).
INITS = {
    "default": None,
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
}


class ResNet(nn.Module):
    """A ResNet whose ``features(x)`` gives the pooled representation and ``forward(x)`` the logits.

    ``stem="cifar"``: 3×3 conv, stride 1, no max-pool (the usual choice for 32×32 inputs).
    ``stem="imagenet"``: 7×7 conv, stride 2, then 3×3 max-pool (torchvision's; the paper's code used it
    even on 32×32 images). Stage widths are ``round(64·width)·2^i``.
    """

    def __init__(
        self,
        depth: int = 18,
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
        width: float = 1.0,
        zero_init_residual: bool = False,
        init: str = "default",
    ) -> None:
        super().__init__()
        if depth not in _LAYOUT:
            raise ValueError(f"model.depth must be one of {sorted(_LAYOUT)} (got {depth})")
        if stem not in STEMS:
            raise ValueError(f"model.stem must be one of {STEMS} (got {stem!r})")
        if width <= 0:
            raise ValueError(f"model.width must be > 0 (got {width})")
        if init not in INITS:
            raise ValueError(f"model.init must be one of {tuple(INITS)} (got {init!r})")
        block, blocks = _LAYOUT[depth]
        base = max(1, round(64 * width))
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, base, 3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(base),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, base, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(base),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        stages, inplanes = [], base
        for i, n in enumerate(blocks):
            planes = base * 2**i
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                downsample = None
                if stride != 1 or inplanes != planes * block.expansion:
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(planes * block.expansion),
                    )
                layers.append(block(inplanes, planes, stride, downsample))
                inplanes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, num_classes)
        self._init_weights(zero_init_residual, INITS[init])

    def _init_weights(self, zero_init_residual: bool, init: Callable[[Tensor], object] | None) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if init is not None and isinstance(m, nn.Conv2d | nn.Linear):
                init(m.weight)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def features(self, x: Tensor) -> Tensor:
        """Pooled backbone features, shape ``N × num_features``."""
        return self.pool(self.stages(self.stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
