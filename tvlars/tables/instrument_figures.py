"""Figures of the instruments' records (``docs/instruments.md``): the gradient noise scale, the sharpness and the
preconditioned sharpness over its threshold against the step, one line per row of a table, one panel per batch
size.

Both take the local run directories of a table grouped by row label, read ``noise_scale.jsonl`` /
``sharpness.jsonl`` and each run's batch size from its ``summary.json``, draw the mean over a row's runs at a
batch size (seeds, grid points) with their min–max band, and write the PNG only when there are data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tvlars.records import read_jsonl
from tvlars.tables.design import Spec
from tvlars.tables.figures import figure_title, panels, save

Runs = Mapping[str, Sequence[str | Path]]
"""Run directories grouped by row label (legend order)."""
Curves = dict[int, dict[str, pd.DataFrame]]
"""A quantity's curves: ``{batch size: {row label: DataFrame(step × run)}}``."""


def _batch_size(run_dir: Path) -> int | None:
    """The global batch size from ``summary.json``'s resolved config, or ``None`` if it cannot be read."""
    try:
        return int(json.loads((run_dir / "summary.json").read_text())["config"]["batch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def preconditioned_ratio(row: Mapping[str, Any]) -> float | None:
    """``lambda_max_preconditioned / preconditioned_threshold`` of a ``sharpness.jsonl`` row (1: the edge of
    stability, docs/instruments.md#preconditioned-sharpness), ``None`` when the row has no such pair."""
    value, threshold = row.get("lambda_max_preconditioned"), row.get("preconditioned_threshold")
    if isinstance(value, int | float) and isinstance(threshold, int | float) and threshold > 0:
        return value / threshold
    return None


def series(run_dir: str | Path, file: str, key: str | Callable[[Mapping[str, Any]], float | None]) -> pd.Series:
    """``key`` (a field, or a function of the row) per step of a run's ``file``; non-numeric values skipped."""
    value = key if callable(key) else (lambda row: row.get(key))
    points = {}
    for r in read_jsonl(Path(run_dir) / file):
        v = value(r)
        if isinstance(r.get("step"), int) and isinstance(v, int | float) and not isinstance(v, bool):
            points[r["step"]] = float(v)
    return pd.Series(points, name=str(run_dir), dtype=float).sort_index()


def _curves(runs: Runs, file: str, key: str | Callable[[Mapping[str, Any]], float | None]) -> Curves:
    """``{batch size: {row: DataFrame(step × run) of key}}`` from each run's ``file`` (:func:`series`)."""
    out: Curves = {}
    for row, run_dirs in runs.items():
        for run_dir in map(Path, run_dirs):
            points = series(run_dir, file, key)
            size = _batch_size(run_dir)
            if points.empty or size is None:
                continue
            frames = out.setdefault(size, {})
            frames[row] = pd.concat([frames[row], points], axis=1) if row in frames else points.to_frame()
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


def _by_batch_size(runs: Runs, curves: Curves, draw: Callable[[Axes, int, str, pd.DataFrame, str], None] | None = None,
                   mark: Callable[[Axes, int], None] | None = None) -> tuple[Figure, list[Axes]]:
    """One panel per batch size of ``curves``: each row's frame drawn by ``draw(ax, size, row, frame, colour)``
    (default: :func:`_draw`) in the row's colour, then ``mark(ax, size)``, the panel's title and grid."""
    colours = {row: f"C{i % 10}" for i, row in enumerate(runs)}
    sizes = sorted(curves)
    fig, axes = panels(len(sizes))
    for ax, size in zip(axes, sizes, strict=True):
        for row, frame in curves[size].items():
            if draw is None:
                _draw(ax, frame, colours[row], row)
            else:
                draw(ax, size, row, frame, colours[row])
        if mark is not None:
            mark(ax, size)
        ax.set_title(f"batch size {size}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return fig, axes


def noise_scale_figure(runs: Runs, out_dir: str | Path, title: str = "") -> list[Path]:
    """``noise_scale.png``: ``B_simple`` against the step, per row, one panel per batch size; dashed lines mark
    every batch size of the table (the panel's own in black). Where ``B_simple`` is above a batch size, that batch
    is "small" for the task (steps shrink almost linearly with more data); below it, the batch is "large"
    (McCandlish et al. 2018). Non-positive estimates (noise early in a run) are left out."""
    curves = _curves(runs, "noise_scale.jsonl", "b_simple")
    if not curves:
        return []

    def batch_sizes(ax: Axes, size: int) -> None:
        for other in sorted(curves):
            ax.axhline(other, color="black" if other == size else "grey", linestyle="--", linewidth=0.8)
            ax.annotate(f"B = {other}", (1.0, other), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                        fontsize="x-small", color="black" if other == size else "grey")
        ax.margins(y=0.12)  # room for the labels of the outermost batch sizes

    def positive(ax: Axes, size: int, row: str, frame: pd.DataFrame, colour: str) -> None:
        _draw(ax, frame.where(frame > 0), colour, row)

    fig, axes = _by_batch_size(runs, curves, positive, batch_sizes)
    _log_if_positive(axes)
    return save(fig, axes, "B_simple = tr(Σ)/|G|²", title or "gradient noise scale (dashed: the batch sizes)",
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

    def with_threshold(ax: Axes, size: int, row: str, frame: pd.DataFrame, colour: str) -> None:
        _draw(ax, frame, colour, row)
        if row in thresholds.get(size, {}):
            _draw(ax, thresholds[size][row], colour, None, linestyle=":")

    fig, axes = _by_batch_size(runs, curves, with_threshold)
    _log_if_positive(axes)
    return save(fig, axes, "λ_max (dotted: stability threshold)", title or "sharpness on a fixed batch",
                _out(out_dir) / "sharpness.png")


def preconditioned_figure(runs: Runs, out_dir: str | Path, title: str = "") -> list[Path]:
    """``preconditioned_sharpness.png``: ``λ_max(P^½ H P^½)`` over its stability threshold against the step
    (:func:`preconditioned_ratio`), per row, one panel per batch size, the edge of stability dashed at 1: the
    sharpness that compares optimizers and learning rates (runs measured with ``sharpness_preconditioned``)."""
    curves = _curves(runs, "sharpness.jsonl", preconditioned_ratio)
    if not curves:
        return []
    fig, axes = _by_batch_size(runs, curves, mark=lambda ax, size: ax.axhline(
        1.0, color="black", linestyle="--", linewidth=0.8, label="edge of stability"))
    return save(fig, axes, "λ_max(P^½ H P^½) / threshold",
                title or "preconditioned sharpness over its threshold", _out(out_dir) / "preconditioned_sharpness.png")


FIGURES = ("noise_scale.png", "sharpness.png", "preconditioned_sharpness.png")


def write_instrument_figures(spec: Spec, df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """The instruments' figures of a table (either kind): every finished run of the table, grouped by row in the
    spec's order (a row's curve at a batch size is the mean over all its runs there: trials and seeds)."""
    mine = df[(df["table"] == spec.name) & df["status"].isin(["completed", "diverged"])]
    runs = {row.label: [Path(d) for d in mine.loc[mine["row"] == row.label, "run_dir"]] for row in spec.rows}
    runs = {label: dirs for label, dirs in runs.items() if dirs}
    return [*noise_scale_figure(runs, out_dir, figure_title(spec, "gradient noise scale (dashed: the batch sizes)")),
            *sharpness_figure(runs, out_dir, figure_title(spec, "sharpness on a fixed batch")),
            *preconditioned_figure(runs, out_dir, figure_title(spec, "preconditioned sharpness over its threshold"))]
