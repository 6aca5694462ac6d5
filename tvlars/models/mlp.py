"""A small MLP classifier: a batch-statistics-free model for quick runs and exact DDP-equivalence checks."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """``flatten → [Linear → ReLU] × len(hidden) → Linear``; ``features`` is the last hidden layer."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, hidden: tuple[int, ...] = (256,)):
        super().__init__()
        dims = [in_channels * image_size * image_size, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.num_features = dims[-1]
        self.fc = nn.Linear(dims[-1], num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
