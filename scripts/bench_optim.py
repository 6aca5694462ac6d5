"""Optimizer step cost on ResNet-18's parameters, relative to torch's foreach SGD and AdamW.

Usage: ``python scripts/bench_optim.py [--reps 30] [--warmup 5] [--device cpu] [--threads N]``

Builds torchvision ``resnet18(num_classes=10)``, splits its parameters with
:func:`tvlars.optim.param_groups` (weight decay 5e-4; the same groups for every optimizer), gives them
fixed random gradients, and times ``step()`` of each optimizer. Rounds are interleaved (one step of
every optimizer per round, in a rotating order) so that drift in machine speed hits all of them alike;
the table reports the median over rounds and the ratio to ``SGD(momentum=0.9, foreach=True)`` and
``AdamW(foreach=True)`` measured in the same run. Goals: LARS and TVLARS ≤ 1.3× SGD, LAMB and LAMBC ≤ 1.2× AdamW.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.models import resnet18

from tvlars.distributed import synchronize
from tvlars.optim import LAMB, LAMBC, LARS, TVLARS, param_groups

WEIGHT_DECAY = 5e-4
# name -> (factory taking param groups, baseline name or None, goal ratio or None)
OPTIMIZERS: dict[str, tuple[Callable[[list], torch.optim.Optimizer], str | None, float | None]] = {
    "SGD (torch, foreach)": (lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, foreach=True), None, None),
    "AdamW (torch, foreach)": (lambda g: torch.optim.AdamW(g, lr=1e-3, foreach=True), None, None),
    "LARS": (lambda g: LARS(g, lr=1.0), "SGD (torch, foreach)", 1.3),
    "TVLARS": (lambda g: TVLARS(g, lr=1.0, norm_clamp=10.0), "SGD (torch, foreach)", 1.3),
    "LAMB": (lambda g: LAMB(g, lr=0.01), "AdamW (torch, foreach)", 1.2),
    "LAMBC": (lambda g: LAMBC(g, lr=0.01), "AdamW (torch, foreach)", 1.2),
}
SGD, ADAMW = "SGD (torch, foreach)", "AdamW (torch, foreach)"


def measure(reps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per ``step()`` of each optimizer in :data:`OPTIMIZERS`."""
    optimizers = {}
    for name, (factory, _, _) in OPTIMIZERS.items():
        torch.manual_seed(0)
        model = resnet18(num_classes=10).to(device)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-2
        optimizers[name] = factory(param_groups(model, WEIGHT_DECAY))
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    names = list(optimizers)
    for round_ in range(warmup + reps):
        shift = round_ % len(names)  # rotate the order so no optimizer always follows the same one
        for name in names[shift:] + names[:shift]:
            opt = optimizers[name]
            synchronize(device)
            start = time.perf_counter()
            opt.step()
            synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(medians: dict[str, float]) -> str:
    """Markdown table: optimizer | ms/step | ratio vs SGD | ratio vs AdamW | goal | met?"""
    lines = [
        "| optimizer | ms/step | ratio vs SGD | ratio vs AdamW | goal | met? |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, (_, baseline, goal) in OPTIMIZERS.items():
        sec = medians[name]
        goal_text, met = "–", "–"
        if baseline is not None and goal is not None:
            ratio = sec / medians[baseline]
            goal_text = f"≤ {goal}× {'SGD' if baseline == SGD else 'AdamW'}"
            met = "yes" if ratio <= goal else "no"
        lines.append(
            f"| {name} | {sec * 1e3:.2f} | {sec / medians[SGD]:.2f} | {sec / medians[ADAMW]:.2f} "
            f"| {goal_text} | {met} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    medians = measure(args.reps, args.warmup, device)
    print(
        f"ResNet-18 (torchvision, 10 classes) parameters, {device.type}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.reps} interleaved rounds"
    )
    print(table(medians))


if __name__ == "__main__":
    main()
