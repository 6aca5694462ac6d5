"""What a training step costs and what a GPU offers: the model's FLOPs per image and a run's memory, counted on the
meta device; the dense bf16 peaks of NVIDIA's data sheets, and the epoch-time targets of one H100 (``make gpu-check``,
``make bench``, the sizing of parallel jobs on one GPU in ``make reproduce-table``).
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

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


# What training_memory adds to what it counts: the backward's gradients of activations and autocast's copies
# (a factor on the saved activations), float32 weights, gradients and two optimizer buffers per parameter, and a
# fixed part for the CUDA context, cuDNN's and cuBLAS's workspaces and the allocator's slack.
ACTIVATION_FACTOR = 1.5
PARAMETER_COPIES = 4
FIXED_BYTES = 2 * 2**30


def training_memory(cfg: DictConfig, processes: int = 1) -> int | None:
    """Bytes of GPU memory one of ``processes`` processes of the run ``cfg`` is estimated to need: the tensors a
    training step saves for its backward, counted on the meta device (nothing is computed, no GPU needed) at the
    per-process batch, in bf16 under ``precision=bf16``, scaled by :data:`ACTIVATION_FACTOR`; the parameters
    (:data:`PARAMETER_COPIES` float32 copies); the device path's uint8 dataset with a quarter more for the
    evaluation splits; and :data:`FIXED_BYTES`. ``None`` when the dataset does not declare its image shape or the
    model needs data to be built (linear evaluation). An estimate to check against the first runs' peaks."""
    import torch
    from hydra.utils import get_object

    from tvlars.config import instantiate_node
    from tvlars.data import DatasetInfo
    from tvlars.data.registry import image_shape, train_size
    from tvlars.data.transforms import LARGE_IMAGE_SIZE

    shape = image_shape(cfg.dataset)
    task_class = get_object(cfg.task._target_)
    if shape is None or task_class.required_model is not None:
        return None
    channels, side = shape
    info = DatasetInfo("estimate", int(cfg.dataset.get("num_classes", 1000)), channels, side, (0.5,) * channels,
                       (0.25,) * channels)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    with torch.device("meta"):
        task = instantiate_node(cfg.task, "task", device="meta")
        backbone = instantiate_node(cfg.model, "model", num_classes=info.num_classes, in_channels=channels,
                                    image_size=side)
        model = task.build_model(backbone, info)
    parameters = sum(p.numel() for p in model.parameters()) * 4 * PARAMETER_COPIES
    images = torch.empty(cfg.batch_size // processes, channels, side, side, device="meta", dtype=dtype)
    saved: dict[int, int] = {}  # storage -> bytes: a tensor saved by two ops (a ReLU's output) counts once

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[tensor.untyped_storage()._cdata] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.to(dtype)(*[images] * task_class.views)
    on_device = side < LARGE_IMAGE_SIZE  # where data.on_device=auto takes the device path
    data = int(train_size(cfg.dataset) * channels * side * side * 1.25) if on_device else 0
    return int(sum(saved.values()) * ACTIVATION_FACTOR) + parameters + data + FIXED_BYTES
