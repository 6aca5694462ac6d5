"""Figures of the instruments' records (``docs/instruments.md``): the gradient noise scale and the sharpness
against the step, one line per row of a table, one panel per batch size.

Both take the local run directories of a table grouped by row label, read ``noise_scale.jsonl`` /
``sharpness.jsonl`` and each run's batch size from its ``summary.json``, draw the mean over a row's runs at a
batch size (seeds, grid points) with their min–max band, and write the PNG only when there are data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from tvlars.records import read_jsonl
from tvlars.report.figures import _grid, _save, _title
from tvlars.spec import Spec

Runs = Mapping[str, Sequence[str | Path]]
"""Run directories grouped by row label (legend order)."""


def _batch_size(run_dir: Path) -> int | None:
    """The global batch size from ``summary.json``'s resolved config, or ``None`` if it cannot be read."""
    try:
        return int(json.loads((run_dir / "summary.json").read_text())["config"]["batch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _curves(runs: Runs, file: str, key: str) -> dict[int, dict[str, pd.DataFrame]]:
    """``{batch size: {row: DataFrame(step × run) of key}}`` from each run's ``file`` (non-numeric values skipped)."""
    out: dict[int, dict[str, pd.DataFrame]] = {}
    for row, run_dirs in runs.items():
        for run_dir in map(Path, run_dirs):
            points = {int(r["step"]): float(r[key]) for r in read_jsonl(run_dir / file)
                      if isinstance(r.get("step"), int) and isinstance(r.get(key), int | float)}
            size = _batch_size(run_dir)
            if not points or size is None:
                continue
            series = pd.Series(points, name=str(run_dir)).sort_index()
            frames = out.setdefault(size, {})
            frames[row] = pd.concat([frames[row], series], axis=1) if row in frames else series.to_frame()
    return out


def _draw(ax: Axes, frame: pd.DataFrame, colour: str, label: str | None, linestyle: str = "-") -> None:
    """The mean over the frame's runs (markers on solid lines of few points), with their min–max band when there
    are several."""
    marker = "." if linestyle == "-" and len(frame) < 30 else None
    ax.plot(frame.index, frame.mean(axis=1), color=colour, label=label, marker=marker, linestyle=linestyle)
    if frame.shape[1] > 1:
        ax.fill_between(frame.index, frame.min(axis=1), frame.max(axis=1), color=colour, alpha=0.2, linewidth=0)


def _log_if_positive(axes: list[Axes]) -> None:
    """Log y-scale when every plotted value is positive (it is the natural scale of both quantities)."""
    values = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for ax in axes for line in ax.get_lines()])
    values = values[np.isfinite(values)]
    if values.size and values.min() > 0:
        for ax in axes:
            ax.set_yscale("log")


def _out(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def noise_scale_figure(runs: Runs, out_dir: str | Path, title: str = "") -> list[Path]:
    """``noise_scale.png``: ``B_simple`` against the step, per row, one panel per batch size; dashed lines mark
    every batch size of the table (the panel's own in black). Where ``B_simple`` is above a batch size, that batch
    is "small" for the task (steps shrink almost linearly with more data); below it, the batch is "large"
    (McCandlish et al. 2018). Non-positive estimates (noise early in a run) are left out."""
    curves = _curves(runs, "noise_scale.jsonl", "b_simple")
    if not curves:
        return []
    colours = {row: f"C{i % 10}" for i, row in enumerate(runs)}
    sizes = sorted(curves)
    fig, axes = _grid(len(sizes))
    for ax, size in zip(axes, sizes, strict=True):
        for row, frame in curves[size].items():
            _draw(ax, frame.where(frame > 0), colours[row], row)
        for other in sizes:
            ax.axhline(other, color="black" if other == size else "grey", linestyle="--", linewidth=0.8)
            ax.annotate(f"B = {other}", (1.0, other), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                        fontsize="x-small", color="black" if other == size else "grey")
        ax.set_title(f"batch size {size}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.margins(y=0.12)  # room for the labels of the outermost batch sizes
    _log_if_positive(axes)
    return _save(fig, axes, "B_simple = tr(Σ)/|G|²", title or "gradient noise scale (dashed: the batch sizes)",
                 _out(out_dir) / "noise_scale.png")


def sharpness_figure(runs: Runs, out_dir: str | Path, title: str = "") -> list[Path]:
    """``sharpness.png``: ``λ_max`` of the training-loss Hessian against the step, per row, one panel per batch
    size; dotted in the row's colour, the optimizer's stability threshold where it applies (plain SGD: ``2/lr``,
    with momentum ``(2 + 2β)/lr``, Nesterov ``(2 + 2β)/((1 + 2β) lr)``; none for LARS, LAMB, AdamW: Cohen et al.
    2021), read from ``sharpness.jsonl``."""
    curves = _curves(runs, "sharpness.jsonl", "lambda_max")
    if not curves:
        return []
    thresholds = _curves(runs, "sharpness.jsonl", "stability_threshold")
    colours = {row: f"C{i % 10}" for i, row in enumerate(runs)}
    sizes = sorted(curves)
    fig, axes = _grid(len(sizes))
    for ax, size in zip(axes, sizes, strict=True):
        for row, frame in curves[size].items():
            _draw(ax, frame, colours[row], row)
            if row in thresholds.get(size, {}):
                _draw(ax, thresholds[size][row], colours[row], None, linestyle=":")
        ax.set_title(f"batch size {size}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    _log_if_positive(axes)
    return _save(fig, axes, "λ_max (dotted: stability threshold)", title or "sharpness on a fixed batch",
                 _out(out_dir) / "sharpness.png")


FIGURES = ("noise_scale.png", "sharpness.png")


def write_instrument_figures(spec: Spec, df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """The instruments' figures of a table (either kind): every finished run of the table, grouped by row in the
    spec's order (a row's curve at a batch size is the mean over all its runs there: trials and seeds)."""
    mine = df[(df["table"] == spec.name) & df["status"].isin(["completed", "diverged"])]
    runs = {row.label: [Path(d) for d in mine.loc[mine["row"] == row.label, "run_dir"]] for row in spec.rows}
    runs = {label: dirs for label, dirs in runs.items() if dirs}
    return [*noise_scale_figure(runs, out_dir, _title(spec, "gradient noise scale (dashed: the batch sizes)")),
            *sharpness_figure(runs, out_dir, _title(spec, "sharpness on a fixed batch"))]
