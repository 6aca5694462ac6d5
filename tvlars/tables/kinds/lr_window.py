r"""LR-window studies (spec ``kind: lr_window``): over how wide a range of one swept key (the peak learning rate)
does each row train well?

:data:`LR_WINDOW` builds ``lr_window.md``, ``lr_window.csv`` and ``lr_window_rows.csv`` from the records, draws
``lr_window.png`` and ``lr_window_sharpness.png``, and compares a reproduction with the committed ``lr_window.csv``.

A spec of this kind runs rows × the values of ``sweep`` (each row's own grid) × ``seeds`` at one column value;
nothing is selected: every swept value is reported. Per row and swept value ``x``, over the seeds whose run
completed: the final validation and test top-1 (mean ± sample std), the final training loss (mean), and how many
seeds diverged (a non-finite loss or metric).

**The window.** For a set of seeds ``S``, a swept value ``x`` is *stable* when at least one seed of ``S``
completed at ``x`` and none diverged there; its score ``m_S(x)`` is the mean final validation top-1 over the seeds
of ``S`` that completed. With ``best_S = max_x m_S(x)`` over stable values and ``δ`` = ``window_tolerance``
(points),

    W_S = {x stable : m_S(x) ≥ best_S − δ},   reported as [min W_S, max W_S],
    width = log10(max W_S / min W_S) decades.

Swept values between the two edges that are not in ``W_S`` are *gaps* (listed); an edge that is the smallest or
largest swept value is *censored*: the window may extend beyond the sweep and its width is a lower bound. The
resolution is the sweep's spacing (doubling: log10 2 ≈ 0.30 decades).

**Seed noise.** The window of all seeds is reported with the range of the windows of the leave-one-seed-out
subsets ``S ∖ {s}``, one per seed (the jackknife's subsets; no random draws): the interval is the smallest and
largest of their widths. Two rows' widths differ beyond seed noise only when these ranges do not overlap. With one
seed there is no interval.

**Sharpness.** Runs measured with ``sharpness_preconditioned=true`` give ``lambda_max_preconditioned /
preconditioned_threshold`` against the step (docs/instruments.md#preconditioned-sharpness): the quantity that
compares optimizers and learning rates; ``lr_window_sharpness.png`` draws it per row at its best swept value.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tvlars.records import Status
from tvlars.tables.cells import gather, run_state
from tvlars.tables.compare import SYMBOLS, VERDICTS, report, verdict
from tvlars.tables.design import Row, Spec, assignments, spec_error
from tvlars.tables.figures import figure_title, row_colours, save
from tvlars.tables.instrument_figures import preconditioned_ratio, series
from tvlars.tables.kinds.base import Table, TableKind
from tvlars.tables.render import (
    column_header,
    csv_text,
    format_value,
    md_table,
    mean_std,
    number,
    page,
    problems_section,
)
from tvlars.tables.statistics import ALPHA, mean_of, std_of

METRIC = "final_val_top1"  # the window's metric (validation; test top-1 is reported beside it)
TOLERANCE = 2.0  # default window_tolerance: points of validation top-1 below the row's best
CSV = "lr_window.csv"
FIGURES = ("lr_window.png", "lr_window_sharpness.png")
CSV_HEADER = ("row", "column", "sweep_key", "value", "val_mean", "val_std", "test_mean", "test_std",
              "train_loss_mean", "n_seeds", "diverged", "expected", "in_window", "status")
ROWS_HEADER = ("row", "column", "low", "high", "width_decades", "censored_low", "censored_high", "gaps",
               "width_min", "width_max", "best", "best_val_mean", "tolerance")
# the committed lr_window.csv's columns for the comparison's generic names
COMPARE_FIELDS = {"mean": "val_mean", "std": "val_std", "n_seeds": "n_seeds"}


# --------------------------------------------------------------------------------------------- the window
@dataclass(frozen=True)
class Window:
    """The stable swept values within the tolerance of the best (module docstring), among the ``swept`` values."""

    members: tuple[float, ...]  # ascending
    best: float  # the swept value with the best mean score
    best_score: float
    swept: tuple[float, ...]  # every swept value of the row, ascending

    @property
    def low(self) -> float:
        return self.members[0]

    @property
    def high(self) -> float:
        return self.members[-1]

    @property
    def width(self) -> float:
        """log10(high / low), in decades."""
        return math.log10(self.high / self.low)

    @property
    def gaps(self) -> list[float]:
        """Swept values strictly between the edges that are not in the window."""
        return [x for x in self.swept if self.low < x < self.high and x not in self.members]

    @property
    def censored(self) -> tuple[bool, bool]:
        """Whether the low / high edge is the smallest / largest swept value (the window may extend beyond)."""
        return self.low == self.swept[0], self.high == self.swept[-1]


def find_window(scores: Mapping[float, Mapping[int, float | None]], seeds: Iterable[int],
                tolerance: float) -> Window | None:
    """The window over ``seeds``: ``scores[x][seed]`` is the final validation top-1 of a completed run, ``None`` for
    a diverged one (a seed absent at ``x`` did not finish). ``None`` when no swept value is stable."""
    chosen = set(seeds)
    means = {}
    for x, by_seed in scores.items():
        finished = [v for s, v in by_seed.items() if s in chosen]
        if finished and None not in finished:
            means[x] = statistics.fmean(finished)  # type: ignore[arg-type]
    if not means:
        return None
    best = max(means, key=lambda x: (means[x], -x))  # ties: the smaller value
    members = tuple(sorted(x for x, m in means.items() if m >= means[best] - tolerance))
    return Window(members, best, means[best], tuple(sorted(scores)))


# --------------------------------------------------------------------------------------------- the records
@dataclass
class SweptValue:
    """One swept value of a row: the final metrics of its completed seeds (in seed order), and how many diverged."""

    value: float
    status: str  # ok (a seed completed) | diverged (every finished seed diverged) | failed | missing
    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    diverged: int = 0
    expected: int = 0
    runs: list[str] = field(default_factory=list)  # completed run directories


@dataclass
class RowWindow:
    """A row's swept values (ascending), its window over every seed and the leave-one-seed-out windows."""

    row: str
    column: Any
    values: list[SweptValue]
    window: Window | None
    left_out: list[Window | None]  # one per spec seed, in seed order; empty with fewer than two seeds

    @property
    def interval(self) -> tuple[float, float] | None:
        """Smallest and largest leave-one-seed-out width; ``None`` with one seed or a subset without a window."""
        if not self.left_out or any(w is None for w in self.left_out):
            return None
        widths = [w.width for w in self.left_out if w is not None]
        return min(widths), max(widths)

    def at(self, value: float) -> SweptValue:
        return next(v for v in self.values if v.value == value)

    @property
    def finished(self) -> tuple[int, int]:
        """Runs that finished (completed with a validation score, or diverged) and runs expected, over the sweep."""
        return sum(len(v.val) + v.diverged for v in self.values), sum(v.expected for v in self.values)

    @property
    def incomplete(self) -> bool:
        """Whether runs of the sweep are missing, running or failed: its window may still change."""
        done, expected = self.finished
        return done < expected

    @property
    def progress(self) -> str:
        """``k of n``: runs finished of runs expected."""
        return "{} of {}".format(*self.finished)


def _cell(spec: Spec, row: Row, column: Any, runs: pd.DataFrame) -> tuple[RowWindow, list[str]]:
    """Gather one row's runs per swept value and find its windows."""
    # completed with a test score but no validation score: trained without a validation split
    blind = (runs["status"] == Status.completed.value) & runs["final_val_top1"].isna() & runs["final_test_top1"].notna()
    found = gather(spec, row, column, runs[~blind],
                   lambda run: (run_state(run.status, float(run.final_val_top1)), float(run.final_val_top1)))
    problems = list(found.problems)
    if blind.any():
        problems.insert(0, f"{found.where}: {int(blind.sum())} completed run(s) have no final_val_top1 (trained "
                           "without a validation split, dataset.val_size=0?); the window needs it, so they are left "
                           "out")
    values, scores = [], {}
    for point, key in zip(found.points, found.keys, strict=True):
        x = float(point[spec.sweep])
        records = {s: found.records[(key, s)] for s in spec.seeds if (key, s) in found.records}
        used = {s: r for s, r in records.items() if r.state == "usable"}
        diverged = sum(r.state == "diverged" for r in records.values())
        scores[x] = {**{s: r.value for s, r in used.items()},
                     **{s: None for s, r in records.items() if r.state == "diverged"}}
        status = "ok" if used else "diverged" if diverged else \
            "failed" if any(r.state == "failed" for r in records.values()) else "missing"
        values.append(SweptValue(x, status, [r.value for r in used.values()],
                                 [float(r.run.final_test_top1) for r in used.values()],
                                 [float(r.run.final_train_loss) for r in used.values()], diverged, len(spec.seeds),
                                 [r.run_dir for r in used.values()]))
    seeds = list(spec.seeds)
    left_out = [find_window(scores, [t for t in seeds if t != s], spec.window_tolerance) for s in seeds] \
        if len(seeds) > 1 else []
    return RowWindow(row.label, column, sorted(values, key=lambda v: v.value),
                     find_window(scores, seeds, spec.window_tolerance), left_out), problems


# --------------------------------------------------------------------------------------------- rendering
def _mean_std(values: list[float]) -> str:
    return mean_std(mean_of(values), std_of(values)) if values else "–"


def _value_text(value: SweptValue) -> list[str]:
    """The metric cells of one swept value: validation, test, training loss; ``(n=k/m)`` when seeds are missing."""
    if value.status != "ok":
        shown = {"diverged": "div", "failed": "failed"}.get(value.status, "–")
        return [shown, shown, shown]
    short = f" (n={len(value.val)}/{value.expected})" if len(value.val) < value.expected else ""
    return [_mean_std(value.val) + short, _mean_std(value.test) + short, f"{mean_of(value.train_loss):.3f}"]


def _width_text(window: Window) -> str:
    low, high = window.censored
    text = f"{window.width:.2f}"
    return f"≥ {text}" if low or high else text


def _window_text(cell: RowWindow) -> str:
    window = cell.window
    if window is None:
        return "none (no stable value)" if cell.finished[0] else "– (no finished run)"
    low, high = window.censored
    text = f"[{'≤ ' if low else ''}{format_value(window.low)}, {'≥ ' if high else ''}{format_value(window.high)}]"
    return text + (f", gap at {', '.join(map(format_value, window.gaps))}" if window.gaps else "")


def _interval_text(cell: RowWindow) -> str:
    if not cell.left_out:
        return "– (one seed)"
    interval = cell.interval
    if interval is None:
        return "– (a subset has no stable value)" if cell.finished[0] else "–"
    return f"{interval[0]:.2f} – {interval[1]:.2f}"


def _resolution(values: list[float]) -> float:
    """The finest spacing of the sweep, as a factor between neighbouring values."""
    ordered = sorted(values)
    return min(b / a for a, b in zip(ordered, ordered[1:], strict=False))


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _versus(method: RowWindow, baseline: RowWindow) -> str:
    """One line: the method's window width against a baseline's, beyond seed noise or not."""
    if method.window is None or baseline.window is None:
        missing = method if method.window is None else baseline
        why = "has no stable value" if missing.finished[0] else "has no finished run yet"
        return f"- {method.row} vs {baseline.row}: {missing.row} {why}, no window to compare."
    a, b = method.window.width, baseline.window.width
    order = "wider than" if a > b else "narrower than" if a < b else "as wide as"
    text = f"- {method.row} ({_width_text(method.window)} decades) is {order} {baseline.row} " \
           f"({_width_text(baseline.window)} decades)"
    mine, theirs = method.interval, baseline.interval
    if mine is None or theirs is None:
        text += ": no seed-noise interval for both, so no verdict"
    elif mine[0] > theirs[1]:
        text += (f": beyond seed noise, every leave-one-seed-out width of {method.row} ({_interval_text(method)}) "
                 f"exceeds every one of {baseline.row} ({_interval_text(baseline)})")
    elif mine[1] < theirs[0]:
        text += (f": beyond seed noise, every leave-one-seed-out width of {method.row} ({_interval_text(method)}) "
                 f"is below every one of {baseline.row} ({_interval_text(baseline)})")
    else:
        text += (f": within seed noise, the leave-one-seed-out widths overlap ({_interval_text(method)} against "
                 f"{_interval_text(baseline)})")
    censored = [c.row for c in (method, baseline) if any(c.window.censored)]  # type: ignore[union-attr]
    if len(censored) == 1:
        text += f". The window of {censored[0]} reaches the edge of its sweep: its width is a lower bound"
    elif censored:
        text += (f". The windows of {' and of '.join(censored)} reach the edges of their sweeps: their widths are "
                 "lower bounds")
    unfinished = [f"{c.row} ({c.progress} runs finished)" for c in (method, baseline)
                  if c.incomplete]
    if unfinished:
        text += f". Provisional: the sweep of {' and of '.join(unfinished)} is incomplete"
    return text + "."


def _comparison(spec: Spec, cells: dict[tuple[str, Any], RowWindow]) -> list[str]:
    if spec.compare is None:
        return []
    column = spec.columns[0]
    lines = ["## Windows compared", "", f"> {spec.claim or '(the spec states no claim)'}", "",
             "Each method row's window width against each baseline's; a difference is beyond seed noise only when "
             "the leave-one-seed-out ranges of the two widths do not overlap.", ""]
    for method in spec.compare.method:
        lines += [_versus(cells[(method, column)], cells[(b, column)]) for b in spec.compare.baselines]
    return [*lines, ""]


def _rule(spec: Spec, cells: dict[tuple[str, Any], RowWindow]) -> str:
    key = _short(spec.sweep or "")
    factors = sorted({_resolution([v.value for v in c.values]) for c in cells.values()})
    spacing = ", ".join(f"×{format_value(f)} ({math.log10(f):.2f} decades)" for f in factors)
    seeds = ", ".join(map(str, spec.seeds))
    return (f"Window rule: a value of {key} is stable when at least one of seeds {seeds} completed there and none "
            f"diverged; the window is the stable values whose mean final validation top-1 (over the completed seeds) "
            f"is within {format_value(spec.window_tolerance)} points of the row's best stable mean, reported as "
            f"[lowest, highest] with its width log10(highest / lowest) in decades. Values between the edges that are "
            f"not in the window are listed as gaps. `≤`/`≥` on an edge: it is the smallest/largest value swept, so "
            f"the window may extend beyond and its width (marked ≥) is a lower bound. Seed noise: the range of the "
            f"widths of the windows found with each seed left out in turn (leave-one-seed-out, no random draws). "
            f"Resolution: neighbouring swept values differ by {spacing}.")


def _incomplete(cells: Iterable[RowWindow]) -> list[str]:
    """A paragraph naming the rows whose sweep is not finished (none when every sweep is)."""
    rows = [f"{c.row} ({c.progress})" for c in cells if c.incomplete]
    if not rows:
        return []
    return [f"**Incomplete sweeps**, runs finished of expected: {', '.join(rows)}. Their windows are found over the "
            "finished runs only and may change as the rest finish (*Problems* lists what is missing); a study "
            "continues with `make reproduce-table TABLE=<name> ARGS=--continue`.", ""]


def _row_section(spec: Spec, cell: RowWindow) -> list[str]:
    key = _short(spec.sweep or "")
    members = set(cell.window.members) if cell.window is not None else set()
    lines = [[format_value(v.value), *_value_text(v), f"{v.diverged}/{v.expected}",
              ("best" if cell.window and v.value == cell.window.best else "✓") if v.value in members else ""]
             for v in cell.values]
    return [f"### {cell.row}", "", md_table([key, "validation top-1 (%)", "test top-1 (%)", "train loss",
                                             "diverged", "in window"], lines), ""]


def _markdown(spec: Spec, cells: dict[tuple[str, Any], RowWindow], problems: list[str]) -> str:
    column = spec.columns[0]
    key = _short(spec.sweep or "")
    seeds = len(spec.seeds)
    main = []
    for row in spec.rows:
        cell = cells[(row.label, column)]
        window = cell.window
        best = "–" if window is None else format_value(window.best)
        score = "–" if window is None else _mean_std(cell.at(window.best).val)
        main.append([row.label, _window_text(cell), "–" if window is None else _width_text(window),
                     _interval_text(cell), best, score])
    lines = [f"# {spec.display_title}", "",
             f"Table `{spec.name}`: final validation and test top-1 (%) against `{spec.sweep}` at "
             f"{column_header(spec, column)}, mean ± sample std over {seeds} seed(s) per value; nothing is selected, "
             "every swept value is reported.", "", "## Windows", "",
             md_table(["Method", f"window of {key}", "width (decades)", "leave-one-seed-out widths", f"best {key}",
                       "its validation top-1 (%)"], main), "", *_incomplete(cells.values()), _rule(spec, cells), ""]
    if spec.notes:
        lines += [f"Notes: {spec.notes.strip()}", ""]
    lines += _comparison(spec, cells)
    lines += ["## Every swept value", "",
              f"Per row: final validation and test top-1 (mean ± sample std over the completed seeds), final "
              f"training loss (mean), the seeds that diverged (of {seeds}), and membership of the window (`best`: the "
              "row's best stable mean). `div`: every finished seed diverged; `failed`: runs failed and none completed; "
              "`–`: no finished run; `(n=k/m)`: only k of the m seeds completed.", ""]
    for row in spec.rows:
        lines += _row_section(spec, cells[(row.label, column)])
    lines += ["## What this study can and cannot show", "",
              f"- It can show, for this model, dataset, batch size and epoch budget, over how many decades of {key} "
              "each row trains to within the tolerance of its own best, where it diverges, and whether one row's "
              "range is wider than another's beyond seed noise.",
              f"- It cannot place a window's edge more finely than the sweep's spacing, nor beyond the swept range "
              f"(censored edges); it says nothing about the accuracy each row reaches at its best {key} compared with "
              f"a tuned study (the best mean here is chosen on the same seeds it reports), nor about other budgets "
              f"or scales. With {seeds} seed(s), seed noise is estimated roughly.", ""]
    done = "None: every expected run finished (completed or diverged)."
    return page([*lines, *problems_section(problems, done)])


def _csv(spec: Spec, cells: dict[tuple[str, Any], RowWindow]) -> str:
    lines = []
    for row in spec.rows:
        cell = cells[(row.label, spec.columns[0])]
        members = set(cell.window.members) if cell.window is not None else set()
        lines += [[row.label, cell.column, spec.sweep, v.value, number(mean_of(v.val)), number(std_of(v.val)),
                   number(mean_of(v.test)), number(std_of(v.test)), number(mean_of(v.train_loss)), len(v.val),
                   v.diverged, v.expected, int(v.value in members), v.status] for v in cell.values]
    return csv_text(CSV_HEADER, lines)


def _rows_csv(spec: Spec, cells: dict[tuple[str, Any], RowWindow]) -> str:
    lines = []
    for row in spec.rows:
        cell = cells[(row.label, spec.columns[0])]
        w, interval = cell.window, cell.interval or (math.nan, math.nan)
        lines.append([row.label, cell.column, *[""] * 10, spec.window_tolerance] if w is None else
                     [row.label, cell.column, w.low, w.high, number(w.width), int(w.censored[0]), int(w.censored[1]),
                      json.dumps(w.gaps), number(interval[0]), number(interval[1]), w.best, number(w.best_score),
                      spec.window_tolerance])
    return csv_text(ROWS_HEADER, lines)


# --------------------------------------------------------------------------------------------- figures
# Axes fractions of the accuracy figure: the lowest level of crosses, the highest window bar, and the most one row's
# level takes (rows share at most MARKS of the height at each end, so that many rows still leave room for the data).
CROSSES, BARS, LEVEL, MARKS = 0.03, 0.97, 0.04, 0.3


def _accuracy_figure(spec: Spec, table: Table, out_dir: Path) -> list[Path]:
    """``lr_window.png``: validation and test top-1 against the swept value (log x), one line per row (mean over
    completed seeds, min–max band), diverged seeds as crosses along the bottom and, on the validation panel, each
    row's window as a bar along the top (one level per row each; a cross's count beside it when above 1)."""
    cells = [table.cells[(row.label, spec.columns[0])] for row in spec.rows]
    if not any(v.val for c in cells for v in c.values) and not any(v.diverged for c in cells for v in c.values):
        return []
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = list(fig.subplots(1, 2, sharey=True))
    colours, level_height = row_colours(spec), min(LEVEL, MARKS / len(cells))
    for index, cell in enumerate(cells):
        colour = colours[cell.row]
        for ax, metric in zip(axes, ("val", "test"), strict=True):
            ok = [v for v in cell.values if getattr(v, metric)]
            if ok:
                x = [v.value for v in ok]
                ax.plot(x, [mean_of(getattr(v, metric)) for v in ok], "o-", color=colour, label=cell.row, markersize=4)
                if any(len(getattr(v, metric)) > 1 for v in ok):
                    ax.fill_between(x, [min(getattr(v, metric)) for v in ok], [max(getattr(v, metric)) for v in ok],
                                    color=colour, alpha=0.2, linewidth=0)
            level = CROSSES + level_height * index
            for v in (v for v in cell.values if v.diverged):
                ax.plot([v.value], [level], "x", color=colour, transform=ax.get_xaxis_transform(), clip_on=False)
                if v.diverged > 1:
                    ax.annotate(str(v.diverged), (v.value, level), xycoords=("data", "axes fraction"),
                                xytext=(4, -3), textcoords="offset points", fontsize="x-small", color=colour)
        if cell.window is not None:
            top = BARS - level_height * index
            axes[0].plot([cell.window.low, cell.window.high], [top, top], "|-", color=colour, linewidth=5, alpha=0.5,
                         markersize=9, transform=axes[0].get_xaxis_transform(), clip_on=False)
    key = _short(spec.sweep or "")
    for ax, name in zip(axes, ("validation", "test"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(f"{key} (log scale)")
        ax.set_title(f"final {name} top-1")
        ax.grid(alpha=0.3, which="both")
    _leave_room(axes, len(cells) * level_height, any(v.diverged for c in cells for v in c.values))
    axes[0].add_line(Line2D([], [], color="grey", linewidth=5, alpha=0.5, marker="|", markersize=9,
                            label=f"window (top): within {format_value(spec.window_tolerance)} points of the row's "
                                  "best"))
    axes[0].add_line(Line2D([], [], linestyle="none", marker="x", color="grey", label="diverged seed(s) (bottom)"))
    return save(fig, axes, "top-1 (%)", figure_title(spec, f"accuracy against {key} at "
                                                           f"{column_header(spec, spec.columns[0])} (mean over "
                                                           f"{len(spec.seeds)} seed(s), min–max band)"),
                out_dir / FIGURES[0])


def _leave_room(axes: list[Axes], marks: float, crosses: bool) -> None:
    """Set the shared y limits so that every panel's curves and bands lie below the window bars and, where seeds
    diverged, above the crosses, each taking ``marks`` of the height (fixed margins let a bar cross a curve)."""
    low, high = min(ax.dataLim.y0 for ax in axes), max(ax.dataLim.y1 for ax in axes)
    if not math.isfinite(low) or not math.isfinite(high):
        return
    bottom = CROSSES + marks if crosses else CROSSES  # one level's gap between the data and the marks
    span = max(high - low, 1.0) / (BARS - marks - bottom)
    axes[0].set_ylim(low - bottom * span, low - bottom * span + span)


def _sharpness_figure(spec: Spec, table: Table, out_dir: Path) -> list[Path]:
    """``lr_window_sharpness.png``: per row at its best swept value, the preconditioned sharpness divided by its
    threshold against the step (mean over the completed seeds, min–max band); 1 is the edge of stability."""
    fig = Figure(figsize=(9, 4.6), layout="constrained")
    ax = fig.subplots()
    colours, drawn = row_colours(spec), False
    key = _short(spec.sweep or "")
    for row in spec.rows:
        cell = table.cells[(row.label, spec.columns[0])]
        if cell.window is None:
            continue
        ratios = [series(d, "sharpness.jsonl", preconditioned_ratio) for d in cell.at(cell.window.best).runs]
        ratios = [r for r in ratios if not r.empty]
        if not ratios:
            continue
        frame = pd.concat(ratios, axis=1)
        x = frame.index.to_numpy(dtype=float)
        ax.plot(x, frame.mean(axis=1).to_numpy(), "o-", markersize=4, color=colours[row.label],
                label=f"{row.label} ({key}={format_value(cell.window.best)})")
        if frame.shape[1] > 1:
            ax.fill_between(x, frame.min(axis=1).to_numpy(), frame.max(axis=1).to_numpy(), color=colours[row.label],
                            alpha=0.2, linewidth=0)
        drawn = True
    if not drawn:
        return []
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8, label="edge of stability")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(fontsize="small")
    return save(fig, [ax], "λ_max(P^½ H P^½) / threshold",
                figure_title(spec, f"preconditioned sharpness over its threshold, each row at its best {key}"),
                out_dir / FIGURES[1], shared_legend=False)


class LrWindow(TableKind):
    """LR-window studies (the module docstring)."""

    name = "lr_window"
    metric = METRIC
    csv = CSV
    keys = ("sweep", "window_tolerance")
    compare_fields = COMPARE_FIELDS
    figure_files = FIGURES
    instruments = False  # the instruments' figures would average a row over its swept values
    smoke_points = 2  # a window needs two swept values

    def check(self, name: str, raw: Mapping[str, Any], rows: list[Row], select_on: str) -> dict[str, Any]:
        """The swept key (``sweep``: each row's only grid key, at least 2 distinct values > 0, one column) and the
        ``window_tolerance``."""
        sweep, columns = raw.get("sweep"), raw["columns"]
        if not isinstance(sweep, str) or not sweep:
            raise spec_error(name, "kind lr_window needs sweep: <config key> (the swept key, e.g. optimizer.lr; got "
                                   f"{sweep!r})")
        if len(columns["values"]) != 1 or columns["key"] == sweep:
            raise spec_error(name, "kind lr_window measures one window per row at one setting: give columns one value "
                                   f"of another key than {sweep} (e.g. {{key: batch_size, values: [4096]}}; got "
                                   f"{columns!r})")
        for key, why in (("confirm_seeds", "every swept value is reported, nothing is selected"),
                         ("metric", f"the window is on {METRIC}, test top-1 is reported beside it"),
                         ("chance", "no cell is compared with chance level")):
            if raw.get(key):
                raise spec_error(name, f"{key} does not apply to kind lr_window ({why}); remove it")
        if select_on != "val":
            raise spec_error(name, f"kind lr_window's window is on validation ({METRIC}); drop select_on")
        tolerance = raw.get("window_tolerance", TOLERANCE)
        if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not 0 < tolerance < 100:
            raise spec_error(name, f"window_tolerance must be a number of accuracy points in (0, 100) (got "
                                   f"{tolerance!r})")
        column = columns["values"][0]
        for row in rows:
            where = f"row {row.label!r}"
            if row.trials is not None or set(row.grid) != {sweep}:
                raise spec_error(name, f"{where}: kind lr_window sweeps {sweep} alone, so the row needs grid: "
                                       f"{{{sweep}: [values]}} and nothing else (got {sorted(row.grid) or 'a search'})")
            if sweep in assignments(row.overrides):
                raise spec_error(name, f"{where} sets {sweep} in its overrides; give its values in the grid only")
            values = [p[sweep] for p in row.points(column)]
            if len(values) < 2 or len(set(values)) < len(values) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values):
                raise spec_error(name, f"{where}: the values of {sweep} must be at least 2 distinct numbers > 0 (a log "
                                       f"axis; got {values})")
        return {"metric": self.metric, "sweep": sweep, "window_tolerance": float(tolerance)}

    def cell(self, spec: Spec, row: Row, column: Any, runs: pd.DataFrame) -> tuple[RowWindow, list[str]]:
        return _cell(spec, row, column, runs)

    def build(self, spec: Spec, df: pd.DataFrame) -> Table:
        """Gather every row's swept values from the collected runs ``df``, find the windows and render
        ``lr_window.md``, ``lr_window.csv`` and ``lr_window_rows.csv``."""
        cells, problems = self.select(spec, df)
        files = {"lr_window.md": _markdown(spec, cells, problems), self.csv: _csv(spec, cells),
                 "lr_window_rows.csv": _rows_csv(spec, cells)}
        return Table(spec, cells, files, problems)

    def figures(self, spec: Spec, table: Table, df: pd.DataFrame, out: Path) -> list[Path]:
        """``lr_window.png`` and ``lr_window_sharpness.png`` where the records support them."""
        return [*_accuracy_figure(spec, table, out), *_sharpness_figure(spec, table, out)]

    def compare(self, committed_csv: str, table: Table) -> str:
        """A reproduction's swept values against the committed ``lr_window.csv``: each value's mean validation top-1
        judged by :func:`tvlars.tables.compare.verdict` (same, within seed noise, different, untestable, new)."""
        spec, key = table.spec, _short(table.spec.sweep or "")
        old = {(r["row"], float(r["value"])): {**r, **{name: r[h] for name, h in COMPARE_FIELDS.items()}}
               for r in csv.DictReader(io.StringIO(committed_csv))}
        counts = dict.fromkeys(VERDICTS, 0)
        lines, changed = [], []
        for cell in table.cells.values():
            marks = []
            for v in cell.values:
                verdict_key, reason = verdict(old.get((cell.row, v.value)), v.status, mean_of(v.val), std_of(v.val),
                                              len(v.val))
                counts[verdict_key] += 1
                marks.append(f"{format_value(v.value)} {SYMBOLS[verdict_key]}")
                if reason:
                    changed.append(f"- {cell.row} @ {key}={format_value(v.value)}: {VERDICTS[verdict_key]} ({reason})")
            lines.append([cell.row, ", ".join(marks)])
        return report(spec, counts, "mean final validation top-1 per swept value, Welch's t-test from mean, std and "
                      f"seed count; p < {ALPHA:g}: different", md_table(["Method", f"{key}: verdict"], lines), changed)


LR_WINDOW = LrWindow()
