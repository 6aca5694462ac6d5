"""What the figures of every kind of table share (PNG, matplotlib's Agg canvas; no pyplot state): panels per column,
titles, a row's colour, lines with their bands, the written file, and the tuning curve.

Each figure is written only when the records hold data for it, and its function returns the paths written.
Conventions: one y-scale per figure unless a figure says otherwise; titles and labels wrap and legends take fewer
columns to fit the figure, which grows by the legend's height; bands over seeds show their min–max; a series of
one or two points is drawn as markers with error bars; smoke-profile titles say "smoke". The output is
deterministic: the same records give the same PNG bytes.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from tvlars.records import write_atomic
from tvlars.tables.design import Spec
from tvlars.tables.render import column_header

FEW_POINTS = 2  # series with at most this many points are drawn as markers with error bars

def panels(count: int, height: float = 3.3, sharey: bool = True) -> tuple[Figure, list[Axes]]:
    """Panels for ``count`` columns, at most 3 per line, sharing one y-scale unless ``sharey`` is false."""
    ncols = min(count, 3)
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(max(4.4 * ncols, 6.0), height * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False, sharey="all" if sharey else "none").ravel())
    for ax in axes[count:]:
        ax.set_visible(False)
    for ax in axes[:count]:
        ax.yaxis.set_tick_params(labelleft=True)  # shared scale, but every panel stays readable on its own
    return fig, axes[:count]


def figure_title(spec: Spec, text: str) -> str:
    """Figure title: table name, what is drawn, and "smoke" for the smoke profile."""
    return f"{spec.name}{' [smoke]' if spec.profile == 'smoke' else ''}: {text}"


def draw_series(ax: Axes, x: np.ndarray, y: np.ndarray, low: np.ndarray | None, high: np.ndarray | None,
                colour: str, label: str) -> None:
    """A line with its band, or, for :data:`FEW_POINTS` points or fewer, markers with error bars."""
    if len(x) <= FEW_POINTS:
        yerr = None if low is None else np.vstack([y - low, high - y])
        ax.errorbar(x, y, yerr=yerr, fmt="o", color=colour, label=label, capsize=3)
        return
    ax.plot(x, y, marker="." if len(x) < 30 else None, color=colour, label=label)
    if low is not None:
        ax.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)


def sensible_x(ax: Axes, largest: float) -> None:
    """An x-axis from 0 to a little past the last point (a single point is not left alone on a ±0.05 axis)."""
    ax.set_xlim(0, max(largest, 1) * 1.05 + 0.5)


def row_colours(spec: Spec) -> dict[str, Any]:
    """Each row's colour, by label, in the spec's order (the same in every figure of a table)."""
    palette = [f"C{i}" for i in range(10)]
    return {row.label: palette[i % len(palette)] for i, row in enumerate(spec.rows)}


def save(fig: Figure, axes: list[Axes], ylabel: str, title: str, path: Path, shared_legend: bool = True,
         legend_columns: int = 4) -> list[Path]:
    """Label, mark empty panels, add one legend for the figure (every row once, in up to ``legend_columns``
    columns, fewer where the figure is too narrow for them) unless panels have their own, and write the PNG. Titles
    and y labels too long for the figure are wrapped, and the figure grows by the legend's and the wrapped title's
    height, so that a long legend never squeezes the panels."""
    legend: dict[str, Any] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        legend |= {label: handle for handle, label in zip(handles, labels, strict=True) if label not in legend}
        if not handles:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
    renderer = FigureCanvasAgg(fig).get_renderer()
    panel_height = axes[0].get_window_extent(renderer).height
    _wrap(axes[0].set_ylabel(ylabel), lambda box: box.height <= 0.8 * panel_height, renderer)
    grow = 0.0
    if shared_legend and legend:
        for ncols in range(min(len(legend), legend_columns), 0, -1):
            box = fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=ncols,
                             fontsize="small")
            if ncols == 1 or box.get_window_extent(renderer).width <= fig.bbox.width:
                break
            box.remove()
        grow += box.get_window_extent(renderer).height
    heading = fig.suptitle(title)
    one_line = heading.get_window_extent(renderer).height
    _wrap(heading, lambda box: box.width <= fig.bbox.width, renderer)
    grow += heading.get_window_extent(renderer).height - one_line
    fig.set_figheight(fig.get_figheight() + grow / fig.dpi)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, metadata={"Software": None})  # no version: bytes follow the data
    write_atomic(path, buffer.getvalue())
    return [path]


MIN_WRAP = 24  # characters: a title or label is not wrapped narrower than this


def _wrap(text: Text, fits: Callable[[Any], bool], renderer: Any) -> None:
    """Wrap ``text`` onto more lines, each a few characters shorter at a time, until ``fits(its extent)``."""
    original = text.get_text()
    width = len(original)
    while width > MIN_WRAP and not fits(text.get_window_extent(renderer)):
        width -= 4
        text.set_text(textwrap.fill(original, width, break_long_words=False))


EDGE_MARKERS = {"smallest": "<", "largest": ">"}  # matplotlib markers of render.EDGE_MARKS (◂ ▸)


def tuning_curve(spec: Spec, cells: dict[tuple[str, Any], Any], out_dir: Path, ylabel: str, title: str,
                 improve: Callable[[np.ndarray], np.ndarray] = np.fmax.accumulate, count: str = "") -> list[Path]:
    """``tuning_curve.png``: per column, each row's best value among its first k points in trial order (each cell's
    ``trials``; ``improve`` keeps the best so far, and a NaN or infinite trial never improves it), against k: how
    much tuning each optimizer needs. A row whose chosen point has the smallest or largest value of a searched range
    (``cell.edges``) ends in a triangle pointing to that end. With ``count`` (e.g. "trials reached the target"), each
    row's legend entry says how many of its trials have a finite value, column by column. Only for budgets of 2
    points or more."""
    if spec.budget(spec.rows[0]) < 2:
        return []
    fig, axes = panels(len(spec.columns))
    colours, drawn = row_colours(spec), set()
    labels = {row.label: row.label for row in spec.rows}
    for row in spec.rows if count else ():
        trials = [np.asarray(cells[(row.label, c)].trials, dtype=float) for c in spec.columns]
        labels[row.label] += ": " + " · ".join(f"{np.isfinite(t).sum()}/{len(t)}" for t in trials) + f" {count}"
    for ax, column in zip(axes, spec.columns, strict=True):
        for row in spec.rows:
            cell = cells[(row.label, column)]
            trials = np.array(cell.trials, dtype=float)
            best = improve(np.where(np.isinf(trials), np.nan, trials))
            finite = np.isfinite(best)
            if not finite.any():
                continue
            k = np.arange(1, len(best) + 1, dtype=float)[finite]
            draw_series(ax, k, best[finite], None, None, colours[row.label], labels[row.label])
            for end, marker in EDGE_MARKERS.items():  # in a fixed order: the same records draw the same bytes
                if any(e == end for _, e in cell.edges):
                    ax.plot(k[-1], best[finite][-1], marker, color=colours[row.label], markersize=10)
            drawn.add(row.label)
        ax.set_title(column_header(spec, column))
        ax.set_xlabel("trials k")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        sensible_x(ax, spec.budget(spec.rows[0]))
    if not drawn:
        return []
    for row in spec.rows if count else ():
        if row.label not in drawn:  # its count (no trial reached anywhere), without a line
            axes[0].plot([], [], color=colours[row.label], label=labels[row.label])
    for end in EDGE_MARKERS:
        if any(e == end for cell in cells.values() for _, e in cell.edges):
            axes[0].plot([], [], EDGE_MARKERS[end], color="black", linestyle="none",
                         label=f"chosen point: the {end} value of a searched range (too narrow to show an optimum)")
    return save(fig, axes, ylabel, title, out_dir / "tuning_curve.png", legend_columns=2 if count else 4)
