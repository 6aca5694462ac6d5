"""Figures of a table from its run records (PNG, matplotlib's Agg canvas; no pyplot state).

Each function writes its figure only when the records hold data for it and returns the paths written.
Per-epoch curves and trust ratios are read from local run directories (``metrics.jsonl``, ``trust.jsonl``);
runs collected from W&B have none, and only ``phi.png`` and ``tuning_curve.png`` (from summaries) are drawn.

Conventions: one y-scale per figure (``trust_ratio.png``: per row of panels, one row per optimizer family,
since LARS-family ratios include η and LAMB-family ratios do not); bands over seeds show their min–max;
a series of one or two points is drawn as markers with error bars; smoke-profile titles say "smoke".
The output is deterministic: the same records give the same PNG bytes.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tvlars.records import read_jsonl, write_atomic
from tvlars.report.collect import normalize
from tvlars.report.tables import METRIC_TEXT, SPLIT_TEXT, Table, column_header, format_value
from tvlars.spec import Spec

# metrics.jsonl key -> y label; SSL pre-training rows have only the online probe (the linear eval runs after).
CURVE_KEYS = {"test_top1": "test top-1 (%)", "test_probe_top1": "online-probe test top-1 (%)"}
TVLARS_TARGETS = {"tvlars", "tvlars_from_epochs"}  # last component of optimizer._target_
# Trust-ratio families (last component of optimizer._target_, or CDAT's base): LARS-family ratios include the
# trust coefficient η (≈1e-3 × ‖w‖/‖u‖), LAMB-family ratios do not (≈‖w‖/‖u‖); they share no y-scale.
FAMILIES = {"lars": "LARS family (ratio includes η)", "lamb": "LAMB family"}
FAMILY_OF = {"lars": "lars", "tvlars": "lars", "tvlars_from_epochs": "lars", "lamb": "lamb", "lambc": "lamb"}
FIGURES = ("accuracy_vs_epoch.png", "trust_ratio.png", "phi.png", "tuning_curve.png")
FEW_POINTS = 2  # series with at most this many points are drawn as markers with error bars


def phi(t: np.ndarray, lam: float, alpha: float, delay_steps: float, gamma_min: float) -> np.ndarray:
    """TVLARS's multiplier ``φ(t) = 1 / (α + exp(λ (t − d))) + γ_min`` at optimizer steps ``t`` (as the optimizer)."""
    with np.errstate(over="ignore"):
        return 1.0 / (alpha + np.exp(lam * (np.asarray(t, dtype=float) - delay_steps))) + gamma_min


def _grid(count: int, height: float = 3.3, sharey: bool = True) -> tuple[Figure, list[Axes]]:
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


def _title(spec: Spec, text: str) -> str:
    """Figure title: table name, what is drawn, and "smoke" for the smoke profile."""
    return f"{spec.name}{' [smoke]' if spec.profile == 'smoke' else ''}: {text}"


def _series(ax: Axes, x: np.ndarray, y: np.ndarray, low: np.ndarray | None, high: np.ndarray | None, colour: str,
            label: str) -> None:
    """A line with its band, or, for :data:`FEW_POINTS` points or fewer, markers with error bars."""
    if len(x) <= FEW_POINTS:
        yerr = None if low is None else np.vstack([y - low, high - y])
        ax.errorbar(x, y, yerr=yerr, fmt="o", color=colour, label=label, capsize=3)
        return
    ax.plot(x, y, marker="." if len(x) < 30 else None, color=colour, label=label)
    if low is not None:
        ax.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)


def _sensible_x(ax: Axes, largest: float) -> None:
    """An x-axis from 0 to a little past the last point (a single point is not left alone on a ±0.05 axis)."""
    ax.set_xlim(0, max(largest, 1) * 1.05 + 0.5)


def _colours(spec: Spec) -> dict[str, Any]:
    palette = [f"C{i}" for i in range(10)]
    return {row.label: palette[i % len(palette)] for i, row in enumerate(spec.rows)}


def _save(fig: Figure, axes: list[Axes], ylabel: str, title: str, path: Path, shared_legend: bool = True,
          legend_columns: int = 4) -> list[Path]:
    """Label, mark empty panels, add one legend for the figure (every row once, in up to ``legend_columns``
    columns) unless panels have their own, and write the PNG."""
    legend: dict[str, Any] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        legend |= {label: handle for handle, label in zip(handles, labels, strict=True) if label not in legend}
        if not handles:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
    axes[0].set_ylabel(ylabel)
    if shared_legend:
        fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=min(len(legend), legend_columns),
                   fontsize="small")
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, metadata={"Software": None})  # no version: bytes follow the data
    write_atomic(path, buffer.getvalue())
    return [path]


# ------------------------------------------------------------------------------------------ accuracy vs epoch
def _accuracy_curve(run_dir: str) -> tuple[str, pd.Series] | None:
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
    for key in CURVE_KEYS:
        points = {int(r["epoch"]): float(r[key]) for r in rows if "epoch" in r and isinstance(r.get(key), int | float)}
        if points:
            return key, pd.Series(points).sort_index()
    return None


def accuracy_vs_epoch(spec: Spec, table: Table, out_dir: Path) -> list[Path]:
    """``accuracy_vs_epoch.png``: per column, each row's reported runs, test top-1 per epoch: the mean over seeds
    with a min–max band; one y-scale for the figure."""
    fig, axes = _grid(len(spec.columns))
    colours, keys, last = _colours(spec), set(), 0
    for ax, column in zip(axes, spec.columns, strict=True):
        for row in spec.rows:
            curves = [c for c in map(_accuracy_curve, table.cells[(row.label, column)].runs) if c]
            if not curves:
                continue
            keys.update(key for key, _ in curves)
            frame = pd.concat([series for _, series in curves], axis=1)
            mean, low, high = frame.mean(axis=1), frame.min(axis=1), frame.max(axis=1)
            x = mean.index.to_numpy(dtype=float)
            band = (low.to_numpy(), high.to_numpy()) if len(curves) > 1 else (None, None)
            _series(ax, x, mean.to_numpy(), *band, colours[row.label], row.label)
            last = max(last, x.max())
        ax.set_title(column_header(spec, column))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if not keys:
        return []
    for ax in axes:
        ax.set_xlabel("pre-training epoch" if keys == {"test_probe_top1"} else "epoch")
        _sensible_x(ax, last)
    seeds = len(spec.reported_seeds)
    return _save(fig, axes, " / ".join(CURVE_KEYS[k] for k in CURVE_KEYS if k in keys),
                 _title(spec, f"reported runs per cell, mean over {seeds} seed(s)"
                              + (" with min–max band" if seeds > 1 else "")), out_dir / "accuracy_vs_epoch.png")


# ------------------------------------------------------------------------------------------ trust ratio
def _trust_quantiles(run_dir: str) -> pd.DataFrame | None:
    """Per logged step, the 10/50/90 % quantiles over adapting layers of the trust ratio (positive values)."""
    rows = [r for r in read_jsonl(Path(run_dir) / "trust.jsonl") if "step" in r and "trust_ratio" in r]
    try:
        matrix = np.array([r["trust_ratio"] for r in rows], dtype=float)
    except (TypeError, ValueError):  # ragged or non-numeric rows
        return None
    if matrix.ndim != 2 or not matrix.size:
        return None
    # Non-adapting tensors (biases, norm weights) get ratio 1 at every step: they would flatten the band.
    adapting = ~np.all((matrix == 1.0) | ~np.isfinite(matrix), axis=0)
    values = np.where(matrix > 0, matrix, np.nan)[:, adapting]
    if not values.size:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # steps where every value is NaN
        q10, q50, q90 = np.nanquantile(values, [0.1, 0.5, 0.9], axis=1)
    return pd.DataFrame({"q10": q10, "q50": q50, "q90": q90}, index=[int(r["step"]) for r in rows])


def _family(config: Any) -> str | None:
    """``lars`` or ``lamb`` for the optimizers whose trust ratios are comparable, from the resolved config."""
    optimizer = config.get("optimizer") if isinstance(config, dict) else None
    if not isinstance(optimizer, dict):
        return None
    name = str(optimizer.get("_target_", "")).rsplit(".", 1)[-1].lower()
    return FAMILY_OF.get(str(optimizer.get("base", "")).lower() if name == "cdat" else name)


def trust_ratio(spec: Spec, table: Table, df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``trust_ratio.png``: one row of panels per optimizer family (its own log y-scale), one panel per column:
    median over adapting layers of the trust ratio vs step and its 10–90 % band across layers (seed mean)."""
    configs = dict(zip(df["run_dir"], df["config"], strict=True))
    series: dict[str, dict[Any, list[tuple[str, pd.DataFrame]]]] = {}
    for column in spec.columns:
        for row in spec.rows:
            runs = table.cells[(row.label, column)].runs
            frames = [q for q in map(_trust_quantiles, runs) if q is not None]
            family = next((f for f in (_family(configs.get(r)) for r in runs) if f), None)
            if frames and family:
                mean = pd.concat(frames).groupby(level=0).mean().dropna()
                series.setdefault(family, {}).setdefault(column, []).append((row.label, mean))
    if not series:
        return []
    families = [f for f in FAMILIES if f in series]
    fig = Figure(figsize=(max(4.4 * len(spec.columns), 6.0), 3.3 * len(families)), layout="constrained")
    grid = fig.subplots(len(families), len(spec.columns), squeeze=False, sharey="row")
    colours, last = _colours(spec), max(m.index.max() for f in series.values() for c in f.values() for _, m in c)
    for family, axes in zip(families, grid, strict=True):
        for ax, column in zip(axes, spec.columns, strict=True):
            for label, mean in series[family].get(column, []):
                _series(ax, mean.index.to_numpy(dtype=float), mean["q50"].to_numpy(), mean["q10"].to_numpy(),
                        mean["q90"].to_numpy(), colours[label], label)
            ax.set_title(f"{column_header(spec, column)}: {FAMILIES[family]}", fontsize="medium")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3, which="both")
            ax.yaxis.set_tick_params(labelleft=True)
            _sensible_x(ax, last)
            if ax.has_data():
                ax.set_yscale("log")
        axes[0].set_ylabel("trust ratio (layer median, 10–90 %)")
    axes = [ax for row in grid for ax in row]
    return _save(fig, axes, "trust ratio (layer median, 10–90 %)",
                 _title(spec, "trust ratio of adapting layers (reported runs, seed mean); one y-scale per row"),
                 out_dir / "trust_ratio.png")


# ------------------------------------------------------------------------------------------ phi
def _phi_params(run: Any) -> dict[str, float] | None:
    """φ's parameters from a TVLARS run's resolved config, or ``None`` if it is not one or they are missing."""
    optimizer = run.config.get("optimizer") if isinstance(run.config, dict) else None
    if not isinstance(optimizer, dict) or str(optimizer.get("_target_", "")).rsplit(".", 1)[-1].lower() \
            not in TVLARS_TARGETS:
        return None
    spe, epochs = run.steps_per_epoch, run.epochs
    if pd.isna(spe) or pd.isna(epochs) or spe < 1 or epochs < 1:
        return None
    try:  # the delay in steps as the optimizer computes it (tvlars_from_epochs rounds delay_epochs × steps/epoch)
        delay = (float(optimizer["delay_steps"]) if "delay_steps" in optimizer
                 else round(float(optimizer["delay_epochs"]) * spe))
        return {"lam": float(optimizer["lam"]), "alpha": float(optimizer["alpha"]),
                "gamma_min": float(optimizer["gamma_min"]), "delay": float(delay), "steps_per_epoch": int(spe),
                "epochs": int(epochs)}
    except (KeyError, TypeError, ValueError):
        return None


def _label(row: str, params: dict[str, float], varying: Sequence[str], several_rows: bool) -> str:
    names = {"lam": "λ", "alpha": "α", "gamma_min": "γ_min", "delay": "d"}
    text = ", ".join(f"{names[k]}={format_value(params[k])}" for k in ("lam", *varying))
    return f"{row}: {text}" if several_rows else text


def phi_curves(spec: Spec, table: Table, df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``phi.png``: φ(t) of every TVLARS configuration in the table, per column, x in epochs."""
    runs = df[(df["table"] == spec.name) & df["row"].isin([r.label for r in spec.rows])]
    curves: dict[Any, dict[tuple, tuple[str, dict[str, float], bool]]] = {}
    for run in runs.itertuples(index=False):
        params = _phi_params(run)
        column = next((c for c in spec.columns if normalize(c) == normalize(run.column)), None)
        if params is None or column is None:
            continue
        key = (run.row, *params.values())
        selected = run.run_dir in table.cells[(run.row, column)].runs
        previous = curves.setdefault(column, {}).get(key)
        curves[column][key] = (run.row, params, selected or bool(previous and previous[2]))
    if not curves:
        return []
    columns = [c for c in spec.columns if c in curves]
    fig, axes = _grid(len(columns))
    for ax, column in zip(axes, columns, strict=True):
        entries = sorted(curves[column].values(), key=lambda e: (e[0], e[1]["lam"]))
        varying = [k for k in ("alpha", "gamma_min", "delay") if len({e[1][k] for e in entries}) > 1]
        several_rows = len({e[0] for e in entries}) > 1
        for row, params, selected in entries:
            spe = params["steps_per_epoch"]
            steps = np.unique(np.linspace(1, params["epochs"] * spe, 2000).round())
            label = _label(row, params, varying, several_rows) + (" (selected)" if selected else "")
            ax.plot(steps / spe, phi(steps, params["lam"], params["alpha"], params["delay"], params["gamma_min"]),
                    linewidth=2.2 if selected else 1.0, linestyle="-" if selected else "--", label=label)
        spes = {e[1]["steps_per_epoch"] for e in entries}
        suffix = f" ({spes.pop()} steps/epoch)" if len(spes) == 1 else ""
        ax.set_title(column_header(spec, column) + suffix)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    return _save(fig, axes, "φ(t)", _title(spec, "TVLARS multiplier φ(t) = 1/(α + exp(λ(t − d))) + γ_min"),
                 out_dir / "phi.png", shared_legend=False)


# ------------------------------------------------------------------------------------------ tuning curve
EDGE_MARKERS = {"smallest": "<", "largest": ">"}  # matplotlib markers of tables.EDGE_MARKS (◂ ▸)


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
    fig, axes = _grid(len(spec.columns))
    colours, drawn = _colours(spec), set()
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
            _series(ax, k, best[finite], None, None, colours[row.label], labels[row.label])
            for end, marker in EDGE_MARKERS.items():  # in a fixed order: the same records draw the same bytes
                if any(e == end for _, e in cell.edges):
                    ax.plot(k[-1], best[finite][-1], marker, color=colours[row.label], markersize=10)
            drawn.add(row.label)
        ax.set_title(column_header(spec, column))
        ax.set_xlabel("trials k")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        _sensible_x(ax, spec.budget(spec.rows[0]))
    if not drawn:
        return []
    for row in spec.rows if count else ():
        if row.label not in drawn:  # its count (no trial reached anywhere), without a line
            axes[0].plot([], [], color=colours[row.label], label=labels[row.label])
    for end in EDGE_MARKERS:
        if any(e == end for cell in cells.values() for _, e in cell.edges):
            axes[0].plot([], [], EDGE_MARKERS[end], color="black", linestyle="none",
                         label=f"chosen point: the {end} value of a searched range (too narrow to show an optimum)")
    return _save(fig, axes, ylabel, title, out_dir / "tuning_curve.png", legend_columns=2 if count else 4)


def write_figures(spec: Spec, table: Table, df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """All figures of ``table`` that the records support, written into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tuning = tuning_curve(spec, table.cells, out, f"best so far: {METRIC_TEXT[spec.selection_metric]}",
                          _title(spec, f"tuning curve: best of the first k points (mean over {len(spec.seeds)} "
                                       f"search seed(s), chosen on {SPLIT_TEXT[spec.select_on]})"))
    return [*accuracy_vs_epoch(spec, table, out), *trust_ratio(spec, table, df, out),
            *phi_curves(spec, table, df, out), *tuning]
