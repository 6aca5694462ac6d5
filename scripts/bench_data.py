"""Sampler path vs device path: images/s of the data path alone, the model step alone and the full training step.

Usage: ``python scripts/bench_data.py [--task classification|barlow_twins] [--images N] [--batch-size 512]
[--width W] [--repeats 3] [hydra overrides...]``

Data: synthetic in-memory images shaped like CIFAR-10 (3×32×32, 10 classes) with CIFAR's augmentation (crop with
padding 4 + flip; Barlow Twins: its two asymmetric views), so both paths apply. Model: ResNet-18 (``--width``;
default 1.0 on CUDA, 0.25 on CPU), bf16 autocast and channels-last by default. For each path the engine is built
by the training entry point itself (``data.on_device=false|true``) and measured three ways, each after warm-up
(compilation included) and best of ``--repeats``:

- data alone: one pass over the training loader (batches produced, moved to the device, augmented), no model;
- model step alone: the engine's training step repeated on one batch already on the device;
- full step: the engine's training epoch (``Engine.train_epoch``), data and model together.

On CUDA the model step's achieved TFLOP/s (FLOPs counted by ``torch.utils.flop_counter``) is also reported as a
fraction of the device's dense bf16 peak, and the epoch time is extrapolated to a 50 000-image CIFAR-10 epoch.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import _checkout  # noqa: F401 - this checkout's tvlars first
import torch
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

from tvlars import build as builder
from tvlars import distributed
from tvlars.config import CONFIG_DIR
from tvlars.distributed import synchronize
from tvlars.engine import Engine, TrainState
from tvlars.sizing import H100_EPOCH_TARGET_S, bf16_peak

CIFAR10_TRAIN = 50_000


def best_rate(images: int, run: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Best images/s of ``repeats`` timed calls of ``run`` (each processing ``images`` images)."""
    rates = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        rates.append(images / (time.perf_counter() - start))
    return max(rates)


def drain(loader: Any, engine: Engine) -> None:
    for batch in loader:
        engine._to_device(batch)


def measure(engine: Engine, repeats: int) -> dict[str, float]:
    """images/s of the data path, the model step and the full step, and the model step's FLOPs per image."""
    device, loader = engine.device, engine.train_loader
    images = len(loader) * loader.batch_size
    batch = engine._to_device(next(iter(loader)))
    for _ in range(3):  # warm-up: compilation, cuDNN autotuning, allocator
        engine._train_step(batch)
    drain(loader, engine)
    steps = len(loader)

    def model_steps() -> None:
        for _ in range(steps):
            engine._train_step(batch)

    with FlopCounterMode(display=False) as counter:
        engine._train_step(batch)
    return {"data": best_rate(images, lambda: drain(loader, engine), device, repeats),
            "model": best_rate(images, model_steps, device, repeats),
            "full": best_rate(images, lambda: engine.train_epoch(TrainState(), 0), device, repeats),
            "flops_per_image": counter.get_total_flops() / loader.batch_size}


def build(overrides: list[str]) -> Engine:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    engine = builder.build(cfg, distributed.init(cfg.device)).engine
    return engine


def table(results: dict[str, dict[str, float]], peak: float | None) -> str:
    sampler = results["sampler"]["full"]
    lines = ["| path | data alone (img/s) | model step alone (img/s) | full step (img/s) | full vs sampler "
             "| CIFAR-10 epoch (s) | model TFLOP/s | of bf16 peak |", "|---|---|---|---|---|---|---|---|"]
    for path, r in results.items():
        tflops = r["model"] * r["flops_per_image"] / 1e12
        fraction = f"{tflops * 1e12 / peak:.1%}" if peak else "n/a"
        lines.append(f"| {path} | {r['data']:.0f} | {r['model']:.0f} | {r['full']:.0f} | {r['full'] / sampler:.2f}x "
                     f"| {CIFAR10_TRAIN / r['full']:.1f} | {tflops:.3f} | {fraction} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="classification", choices=["classification", "barlow_twins"])
    parser.add_argument("--images", type=int, default=None, help="training images per epoch (CPU 4096, CUDA 50000)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--width", type=float, default=None, help="ResNet-18 width (CPU 0.25, CUDA 1.0)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. compile=true precision=fp32")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    images = args.images or (CIFAR10_TRAIN if cuda else 4096)
    width = args.width or (1.0 if cuda else 0.25)
    base = ["dataset=synthetic", f"dataset.num_train={images}", "dataset.num_test=512", "dataset.channels=3",
            "dataset.image_size=32", "dataset.augment.crop_padding=4", "dataset.augment.hflip=true",
            "model=resnet18", f"model.width={width}", f"batch_size={args.batch_size}", "precision=bf16",
            "channels_last=true", "logger=none", "progress=lines", "epochs=1", f"task={args.task}"]
    if args.task == "barlow_twins" and not cuda:
        base.append("task.projector_dims=[1024,1024]")  # CPU: a narrower projector keeps the bench short
    results = {}
    for path, on_device in (("sampler", "false"), ("device", "true")):
        engine = build([*base, f"data.on_device={on_device}", *args.overrides])
        results[path] = measure(engine, args.repeats)
    device = engine.device
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"\n## Data paths: {args.task}, {name}, {torch.get_num_threads()} threads\n")
    print(f"setup: {' '.join(base[:-1] + args.overrides)}; {images} images per epoch, best of {args.repeats}\n")
    print(table(results, bf16_peak(name) if cuda else None))
    epoch_s = CIFAR10_TRAIN / results["device"]["full"]
    target = H100_EPOCH_TARGET_S[args.task]
    verdict = "met" if epoch_s <= target else "not met"
    print(f"\nCIFAR-10 {args.task} epoch on the device path: {epoch_s:.1f} s on {name} at width {width} "
          f"(H100 target at width 1.0: <= {target} s; {verdict} here)")


if __name__ == "__main__":
    main()
