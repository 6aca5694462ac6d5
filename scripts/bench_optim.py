"""Optimizer step cost on ResNet-18's parameters, eager and fused, relative to torch's SGD and AdamW.

Usage: ``python scripts/bench_optim.py [--reps 30] [--warmup 5] [--device cuda|cpu] [--threads N]``

Builds torchvision ``resnet18(num_classes=10)`` on ``--device`` (default: CUDA if available), splits its
parameters with :func:`tvlars.optim.param_groups` (weight decay 5e-4; the same groups for every optimizer),
gives them fixed random gradients, and times ``step()`` of each optimizer: ours eager (``fused=False``) and
fused (``fused=True``, compiled; the first step, which compiles, is reported apart and not timed), torch's SGD
(momentum 0.9) and AdamW with ``foreach=True`` and, where torch supports it on the device, ``fused=True``.
Rounds are interleaved (one step of every optimizer per round, in a rotating order) so that drift in machine
speed hits all of them alike; the table reports the median over rounds and the ratios to the foreach SGD and
AdamW of the same run. Goals (fused step): LARS and TVLARS ≤ 1.3× SGD, LAMB and LAMBC ≤ 1.2× AdamW.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import _checkout  # noqa: F401 - this checkout's tvlars first
import torch
from torchvision.models import resnet18

from tvlars.distributed import synchronize
from tvlars.optim import LAMB, LAMBC, LARS, TVLARS, param_groups

WEIGHT_DECAY = 5e-4
SGD, ADAMW = "SGD (torch, foreach)", "AdamW (torch, foreach)"
GOALS = {"LARS": (SGD, 1.3), "TVLARS": (SGD, 1.3), "LAMB": (ADAMW, 1.2), "LAMBC": (ADAMW, 1.2)}
OURS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "LARS": lambda g, fused: LARS(g, lr=1.0, fused=fused),
    "TVLARS": lambda g, fused: TVLARS(g, lr=1.0, fused=fused),
    "LAMB": lambda g, fused: LAMB(g, lr=0.01, fused=fused),
    "LAMBC": lambda g, fused: LAMBC(g, lr=0.01, fused=fused),
}
OPTIMIZERS: dict[str, Callable[[list], torch.optim.Optimizer]] = {
    SGD: lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, foreach=True),
    "SGD (torch, fused)": lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, fused=True),
    ADAMW: lambda g: torch.optim.AdamW(g, lr=1e-3, foreach=True),
    "AdamW (torch, fused)": lambda g: torch.optim.AdamW(g, lr=1e-3, fused=True),
    **{f"{name} ({mode})": (lambda g, make=make, fused=mode == "fused": make(g, fused))
       for name, make in OURS.items() for mode in ("eager", "fused")},
}


def build(device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """Every optimizer of :data:`OPTIMIZERS` that the device supports, each on its own ResNet-18 copy."""
    optimizers = {}
    for name, factory in OPTIMIZERS.items():
        torch.manual_seed(0)
        model = resnet18(num_classes=10).to(device)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-2
        try:
            optimizers[name] = factory(param_groups(model, WEIGHT_DECAY))
        except RuntimeError as exc:  # torch's fused=True on a device without fused kernels
            print(f"skipped {name}: {exc}")
    return optimizers


def measure(reps: int, warmup: int, device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per ``step()`` of each optimizer, and the seconds of its first step (compilation)."""
    optimizers = build(device)
    first, times = {}, {name: [] for name in optimizers}
    for name, opt in optimizers.items():
        start = time.perf_counter()
        opt.step()
        synchronize(device)
        first[name] = time.perf_counter() - start
    names = list(optimizers)
    for round_ in range(warmup + reps):
        shift = round_ % len(names)  # rotate the order so no optimizer always follows the same one
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            optimizers[name].step()
            synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}, first


def table(medians: dict[str, float], first: dict[str, float]) -> str:
    """Markdown table: optimizer | ms/step | vs SGD | vs AdamW | first step (s) | goal | met?"""
    lines = ["| optimizer | ms/step | vs SGD (foreach) | vs AdamW (foreach) | first step (s) | goal | met? |",
             "|---|---:|---:|---:|---:|---|---|"]
    for name, sec in medians.items():
        goal_text = met = "–"
        base, _, mode = name.partition(" (")
        if mode == "fused)" and base in GOALS:
            baseline, goal = GOALS[base]
            goal_text = f"≤ {goal}× {baseline.split()[0]}"
            met = "yes" if sec / medians[baseline] <= goal else "no"
        lines.append(f"| {name} | {sec * 1e3:.2f} | {sec / medians[SGD]:.2f} | {sec / medians[ADAMW]:.2f} "
                     f"| {first[name]:.2f} | {goal_text} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds after the first step (default 5)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    medians, first = measure(args.reps, args.warmup, device)
    print(f"ResNet-18 (torchvision, 10 classes) parameters, {device.type}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.reps} interleaved rounds")
    print(table(medians, first))


if __name__ == "__main__":
    main()
