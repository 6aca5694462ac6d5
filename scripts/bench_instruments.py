"""The cost of one instrument measurement relative to a training step, on the current device.

Usage: ``python scripts/bench_instruments.py [--batch-size 256] [--width 0.25] [--reps 3] [overrides ...]``

Builds the engine of a synthetic run shaped like Fashion-MNIST (1×28×28, ResNet-18 at ``--width``, fp32, the
default SGD) with every instrument configured, and times on one batch, interleaved, the median of ``--reps``
rounds after a warm-up round: the training step (``Engine._train_step``), one gradient-noise-scale measurement,
one sharpness measurement (``sharpness_iters`` Hessian-vector products) and one evaluation of the test set, the
measurements as the loop runs them (:func:`tvlars.instruments.base.untouched` included).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import _checkout  # noqa: F401 - this checkout's tvlars first
import torch

from tvlars import distributed
from tvlars.build import build
from tvlars.config import compose
from tvlars.instruments.base import untouched


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sharpness_iters=10 device=cuda")
    args = parser.parse_args(argv)
    overrides = ["dataset=synthetic", f"dataset.num_train={4 * args.batch_size}", "dataset.num_test=1024",
                 "dataset.channels=1", "dataset.image_size=28", f"model.width={args.width}",
                 f"batch_size={args.batch_size}", "logger=none", "progress=lines", "log_noise_scale_every=1",
                 "log_sharpness_every=1", *args.overrides]
    cfg = compose(overrides)
    engine = build(cfg, distributed.init(cfg.device)).engine
    batch = engine._to_device(next(iter(engine.train_loader)))
    instruments = engine.instruments
    assert instruments.noise_scale is not None and instruments.sharpness is not None

    def measured(work: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with untouched(engine.model, engine.device):
                return work()
        return run

    tasks: dict[str, Callable[[], object]] = {
        "training step": lambda: engine._train_step(batch),
        "noise scale (1 forward + backward)": measured(lambda: instruments.noise_scale.measure(engine, batch)),
        f"sharpness ({cfg.sharpness_iters} HVPs)": measured(lambda: instruments.sharpness.measure(engine)),
        f"evaluation ({len(engine.eval_loaders['test'].sampler)} test images)": engine.evaluate,
    }
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for round_ in range(args.reps + 1):
        for name, work in tasks.items():
            distributed.synchronize(engine.device)
            start = time.perf_counter()
            result = work()
            if isinstance(result, dict):
                torch.stack([torch.as_tensor(v) for v in result.values()]).sum().item()  # wait for the device
            distributed.synchronize(engine.device)
            if round_:
                times[name].append(time.perf_counter() - start)
    step = statistics.median(times["training step"])
    print(f"\n## Instrument costs: {engine.device}, {torch.get_num_threads()} threads, "
          f"ResNet-18 ×{args.width}, batch {args.batch_size}, median of {args.reps}\n")
    print("| work | ms | × training step |\n|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {1000 * statistics.median(values):.0f} | {statistics.median(values) / step:.1f} |")


if __name__ == "__main__":
    main()
