"""What a training step costs and what a GPU offers: the model's FLOPs per image, counted on the meta device, the
dense bf16 peaks of NVIDIA's data sheets, and the epoch-time targets of one H100 (``make gpu-check``, ``make bench``).
"""

from __future__ import annotations

from collections.abc import Sequence

# Issue #7's targets for one H100 (CIFAR-10, ResNet-18 at full width): seconds per training epoch.
H100_EPOCH_TARGET_S = {"classification": 1.5, "barlow_twins": 8.0}
# Dense (no 2:4 sparsity) bf16 tensor-core peaks in FLOP/s from NVIDIA's data sheets, keyed by a substring of
# torch.cuda.get_device_name; the longest matching key wins ("H100 NVL" before "H100", "L40S"/"L40" before "L4",
# "A100"/"A10G" before "A10"). SXM and NVL/PCIe parts differ: H100 SXM 989, PCIe 756, NVL 835; H200 SXM 989, NVL 835.
# V100 (Volta) has fp16 tensor cores but none for bf16: no peak to compare with (None).
BF16_PEAK: dict[str, float | None] = {
    "H100": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H200": 989e12, "H200 NVL": 835e12, "GH200": 989e12,
    "A100": 312e12, "A10": 125e12, "A10G": 70e12, "L4": 121e12, "L40": 181e12, "L40S": 362e12, "V100": None,
}


def bf16_peak(device_name: str) -> float | None:
    """Dense bf16 tensor-core peak (FLOP/s) of the GPU called ``device_name``; ``None`` if unknown or if it has no
    bf16 tensor cores."""
    matches = [key for key in BF16_PEAK if key in device_name]
    return BF16_PEAK[max(matches, key=len)] if matches else None


def flops_per_image(overrides: Sequence[str]) -> float:
    """Forward + backward FLOPs of the config's model for one image (``torch.utils.flop_counter`` on the meta
    device: shapes only, nothing is computed). Synthetic data: the shapes are ``dataset.channels/image_size``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tvlars.config import compose, instantiate_node

    cfg = compose(list(overrides))
    data = cfg.dataset
    model = instantiate_node(cfg.model, "model", num_classes=data.num_classes, in_channels=data.channels,
                             image_size=data.image_size).to("meta")
    images = torch.empty(2, data.channels, data.image_size, data.image_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(images).sum().backward()
    return counter.get_total_flops() / 2
