"""CDAT's step cost relative to its base optimizer's plain training step, on small models.

Usage: ``python scripts/bench_cdat.py [--reps 20] [--warmup 3] [--device cuda|cpu] [--threads N] [--batch-size 128]``

For each model (ResNet-18 at width 0.125 on 1×28×28 inputs, and the 784-256-10 MLP) and each base
(``sgd``, ``lars``, ``lamb``) it times, on the same fixed batch and the paper's param groups (wd 5e-4):

* the base optimizer's plain step: ``zero_grad`` + forward + cross-entropy + backward + ``step()``
  (``sgd``: ``torch.optim.SGD(momentum=0.9, foreach=True)``; ``lars``/``lamb``: :class:`tvlars.optim.LARS` /
  :class:`tvlars.optim.LAMB`);
* ``CDAT(base=...).step(closure)``, whose closure does the same forward and a backward with
  ``create_graph=True``; the step adds the Hessian-vector product (double backward) and the tuner.

Rounds are interleaved (one step of every variant per round, rotating order); the table reports
medians and the ratio CDAT / base measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import _checkout  # noqa: F401 - this checkout's tvlars first
import torch
import torch.nn.functional as F
from torch import nn

from tvlars.distributed import synchronize
from tvlars.models import MLP, ResNet
from tvlars.optim import CDAT, LAMB, LARS, param_groups

WEIGHT_DECAY = 5e-4
MODELS: dict[str, Callable[[], nn.Module]] = {
    "ResNet-18 ×0.125": lambda: ResNet(depth=18, num_classes=10, in_channels=1, width=0.125),
    "MLP 784-256-10": lambda: MLP(num_classes=10, in_channels=1, image_size=28),
}
BASES: dict[str, Callable[[list], torch.optim.Optimizer]] = {
    "sgd": lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, foreach=True),
    "lars": lambda g: LARS(g, lr=1.0),
    "lamb": lambda g: LAMB(g, lr=0.01),
}


def _runner(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step: the closure path for optimizers that need it, the plain path otherwise."""

    def closure(create_graph: bool = False) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward(create_graph=create_graph)
        return loss

    if getattr(optimizer, "needs_closure", False):
        return lambda: optimizer.step(closure)

    def plain() -> None:
        closure()
        optimizer.step()

    return plain


def measure(reps: int, warmup: int, device: torch.device, batch_size: int) -> dict[tuple[str, str, str], float]:
    """Median seconds per step for every (model, base, "base" | "cdat")."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=gen).to(device)
    runners: dict[tuple[str, str, str], Callable[[], None]] = {}
    for model_name, make_model in MODELS.items():
        for base, make_base in BASES.items():
            for variant in ("base", "cdat"):
                torch.manual_seed(0)
                model = make_model().to(device)
                groups = param_groups(model, WEIGHT_DECAY)
                optimizer = make_base(groups) if variant == "base" else CDAT(groups, lr=100.0, base=base)
                runners[(model_name, base, variant)] = _runner(model, optimizer, x, y)
    times: dict[tuple[str, str, str], list[float]] = {key: [] for key in runners}
    keys = list(runners)
    for round_ in range(warmup + reps):
        shift = round_ % len(keys)
        for key in keys[shift:] + keys[:shift]:
            synchronize(device)
            start = time.perf_counter()
            runners[key]()
            synchronize(device)
            if round_ >= warmup:
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(ts) for key, ts in times.items()}


def table(medians: dict[tuple[str, str, str], float]) -> str:
    """Markdown table: model | base | base ms/step | CDAT ms/step | CDAT / base."""
    lines = ["| model | base | base step (ms) | CDAT step (ms) | CDAT / base |", "|---|---|---:|---:|---:|"]
    for model_name in MODELS:
        for base in BASES:
            plain, cdat = medians[(model_name, base, "base")], medians[(model_name, base, "cdat")]
            lines.append(f"| {model_name} | {base} | {plain * 1e3:.1f} | {cdat * 1e3:.1f} | {cdat / plain:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    medians = measure(args.reps, args.warmup, device, args.batch_size)
    print(f"CDAT vs its base optimizer, one training step (forward + backward + step), batch {args.batch_size} of "
          f"1×28×28, {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.reps} interleaved rounds")
    print(table(medians))


if __name__ == "__main__":
    main()
