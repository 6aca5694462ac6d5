"""Scaling tables (spec ``kind: scaling``): optimizer steps to a target against the batch size, and the critical
batch size of each row (Shallue et al. 2018; McCandlish et al. 2018, "An Empirical Model of Large-Batch Training").

Every run records ``steps_to_target`` (the first evaluation at which ``target.metric`` reaches ``target.value``;
null when it never did), ``images_to_target`` and ``time_to_target_s`` in its ``summary.json``. Per (row, batch
size) cell, among the row's trials (grid points or search trials), the trial that reaches the target in the fewest
steps is chosen: trials are ranked by the fraction of their finished search seeds that reached the target (all
first), then by the mean steps over the seeds that reached it, then by trial order. With ``confirm_seeds`` the
chosen trial is re-run with those seeds and the cell reports them. A cell where no trial reached the target is
``not_reached``.

A run that never reached the target (or diverged first) is censored at its step cap (epochs × steps per epoch),
never dropped: a cell reports the Kaplan–Meier median of its seeds' steps to target (:func:`km_median`, scipy's
``ecdf`` of ``CensoredData``) and how many of them reached it; where fewer than half did, the median is beyond the
cap (``> cap``).

Per row, the cells with a finite median are fitted with McCandlish et al.'s

    S(B) = S_min (1 + B_noise / B)

by least squares of log S (``scipy.optimize.curve_fit`` in log S_min, log B_noise, so both stay positive).
Under this model the critical batch size B_crit = E_min / S_min equals B_noise: at B = B_noise training takes twice
the minimum steps and twice the minimum examples. The 95 % interval is exp(log B̂_noise ± t₀.₉₇₅,ₙ₋₂ · se).
B_noise is reported only when at least :data:`MIN_CELLS` cells have a finite median and the estimate lies within the
measured batch sizes; otherwise the row is "not identifiable", with the bound the data give (steps still fall as
1/B up to the largest batch size, or do not fall from the smallest one). A reported fit is labelled uninformative
when it rests on fewer than :data:`MIN_INFORMATIVE` batch sizes or its interval spans more than a factor
:data:`MAX_SPREAD`.

Outputs: ``scaling.md`` (the table, the target, the selection rule, the fits and what such a study can show),
``scaling.csv`` (one line per cell), ``scaling.png`` (log-log, one line per row through the medians, the
perfect-scaling line S ∝ 1/B through the best cell at the smallest batch size that any row measured, the fits
dashed, cells beyond the cap as open triangles at the top edge) and ``tuning_curve.png`` (the fewest steps so far
against the number of trials, with how many trials reached the target).
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, NullLocator
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from tvlars.records import FINAL, Status
from tvlars.tables.cells import FINISHED, Record, gather, run_state, select_cells
from tvlars.tables.design import Row, Spec, assignments, spec_error, target_of
from tvlars.tables.figures import figure_title, row_colours, save, tuning_curve
from tvlars.tables.kinds.base import Table, TableKind
from tvlars.tables.lr_schedule import describe_schedule
from tvlars.tables.render import (
    budget_text,
    column_header,
    csv_text,
    edge_legend,
    edge_marks,
    edges,
    format_point,
    format_value,
    md_table,
    number,
    page,
    problems_section,
    protocol_text,
    protocol_warnings,
    schedule_column,
)
from tvlars.tables.statistics import mean_of, std_of

MIN_CELLS = 3  # batch sizes with a finite median needed to fit two parameters with a residual degree of freedom
MIN_INFORMATIVE = 4  # batch sizes a fit needs before its B_noise is informative
MAX_SPREAD = 10.0  # a 95 % interval of B_noise spanning more than this factor leaves it uninformative
CONFIDENCE = 0.95
METRIC = "steps_to_target"  # the metric of a scaling table: fewest optimizer steps to the target
FIGURE = "scaling.png"
CSV_HEADER = ("row", "batch_size", "steps_median", "steps_mean", "steps_std", "images_mean", "time_mean_s",
              "n_reached", "n_seeds", "cap_steps", "chosen_point", "status")
# the committed scaling.csv's headers of the comparison's column, mean, std and seed count
COMPARE_FIELDS = {"column": "batch_size", "mean": "steps_mean", "std": "steps_std", "n_seeds": "n_reached"}
STATUS_TEXT = {"not_reached": "not reached", "diverged": "div", "failed": "failed", "missing": "–"}


@dataclass
class ScalingCell:
    """One (row, batch size) cell: steps to target of the chosen trial over its reported seeds."""

    row: str
    column: Any  # the batch size
    status: str  # ok (a seed reached) | not_reached | diverged (every run diverged) | failed | missing (no run)
    median: float = math.nan  # Kaplan–Meier median steps of the finished reported seeds; inf: under half reached
    mean: float = math.nan  # steps to target, mean over the reported seeds that reached it (scaling.csv)
    std: float = math.nan  # sample std of those; NaN with one
    n: int = 0  # reported seeds that reached the target
    finished: int = 0  # reported seeds that finished (reached, not reached or diverged)
    expected: int = 0  # reported seeds the spec asks for
    images: float = math.nan  # images to target, mean over the seeds that reached it
    time_s: float = math.nan  # training seconds to target, mean over the same seeds
    point: dict[str, Any] | None = None  # the chosen trial
    cap: float = math.nan  # step cap (epochs × steps per epoch) of the chosen trial, else the most any run had
    failed: int = 0  # failed runs anywhere in the cell (listed under Problems)
    search_done: bool = False  # every trial × search seed finished
    values: list[float] = field(default_factory=list)  # steps of the reported seeds that reached the target
    trials: list[float] = field(default_factory=list)  # per trial in order: KM median over its search seeds
    edges: list[tuple[str, str]] = field(default_factory=list)  # the chosen trial's ends of a searched range
    schedule: str = ""  # the LR schedule of the reported runs in words


@dataclass(frozen=True)
class CriticalBatch:
    """The fit of ``S(B) = S_min (1 + B_noise / B)`` to one row's reached cells.

    ``status``: ``fit`` (B_noise within the measured batch sizes), ``above`` / ``below`` (the estimate lies beyond
    the largest / below the smallest measured batch size: only a bound is identified), ``too_few`` (fewer than
    :data:`MIN_CELLS` reached cells) or ``failed`` (no convergence, or no finite covariance)."""

    status: str
    cells: int  # reached cells fitted
    s_min: float = math.nan
    b_noise: float = math.nan
    low: float = math.nan  # 95 % interval of B_noise
    high: float = math.nan
    batch_range: tuple[float, float] = (math.nan, math.nan)  # smallest and largest fitted batch size

    @property
    def identified(self) -> bool:
        return self.status == "fit"

    def caveats(self) -> list[str]:
        """Why an identified fit is uninformative: fewer than :data:`MIN_INFORMATIVE` batch sizes, or an interval
        spanning more than a factor :data:`MAX_SPREAD` (nothing when it is informative)."""
        reasons = []
        if self.cells < MIN_INFORMATIVE:
            reasons.append(f"only {self.cells} batch sizes fitted (fewer than {MIN_INFORMATIVE})")
        if not self.high <= MAX_SPREAD * self.low:
            reasons.append(f"the 95 % interval spans a factor {self.high / self.low:.3g} (more than {MAX_SPREAD:g})")
        return reasons

    def text(self) -> str:
        """B_noise with its interval (and why it is uninformative), or why it is not identifiable."""
        smallest, largest = (format_value(b) for b in self.batch_range)
        if self.status == "fit":
            caveats = self.caveats()
            return (f"{self.b_noise:.4g} (95 % interval {self.low:.3g} to {self.high:.3g})"
                    + (f"; uninformative: {' and '.join(caveats)}" if caveats else ""))
        if self.status == "above":
            return (f"not identifiable: above the largest batch size, B_noise > {largest} (steps fall about as 1/B "
                    f"or faster up to it; the fit's {self.b_noise:.3g} is an extrapolation)")
        if self.status == "below":
            return (f"not identifiable: below the smallest batch size, B_noise < {smallest} (steps barely fall with "
                    f"B; the fit's {self.b_noise:.3g} is an extrapolation)")
        if self.status == "too_few":
            return (f"not identifiable: {self.cells} batch size(s) with a finite median steps to target, the fit "
                    f"needs {MIN_CELLS}")
        return "not identifiable: the fit did not converge to a finite estimate"


def _log_steps(batch: np.ndarray, log_s_min: float, log_b_noise: float) -> np.ndarray:
    """log S(B) = log S_min + log(1 + B_noise / B)."""
    return log_s_min + np.log1p(np.exp(log_b_noise) / batch)


def fit_critical_batch(batch_sizes: list[float], steps: list[float]) -> CriticalBatch:
    """Least squares of log S against log(S_min (1 + B_noise / B)) over the cells with a finite median."""
    batch, s = np.asarray(batch_sizes, dtype=float), np.asarray(steps, dtype=float)
    if len(batch) < MIN_CELLS:
        return CriticalBatch("too_few", len(batch), batch_range=(min(batch, default=math.nan),
                                                                 max(batch, default=math.nan)))
    span = (float(batch.min()), float(batch.max()))
    start = (math.log(s.min() / 2), math.log(math.sqrt(span[0] * span[1])))  # the knee mid-range
    try:
        with warnings.catch_warnings():  # a degenerate fit warns about the covariance: judged below instead
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            params, cov = curve_fit(_log_steps, batch, np.log(s), p0=start, maxfev=10_000)
    except (RuntimeError, ValueError):
        return CriticalBatch("failed", len(batch), batch_range=span)
    se = math.sqrt(cov[1, 1]) if np.isfinite(cov).all() and cov[1, 1] >= 0 else math.nan
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(batch) - 2))
    with np.errstate(over="ignore"):  # a run-away fit: inf, judged "above" below
        s_min, b_noise, low, high = (float(v) for v in np.exp([*params, params[1] - t * se, params[1] + t * se]))
    status = "above" if b_noise > span[1] else "below" if b_noise < span[0] else "fit" if math.isfinite(se) \
        else "failed"
    return CriticalBatch(status, len(batch), s_min, b_noise, low, high, span)


# --------------------------------------------------------------------------------------------- selection
def _run_state(run: Any) -> tuple[str, float]:
    """A run reaches the target at its recorded ``steps_to_target``, whatever happened after (with
    ``target.stop=true`` the run ends there); a completed run without one did not reach it."""
    steps = float(run.steps_to_target)
    if run.status in FINAL and math.isfinite(steps):
        return "usable", steps
    return ("unreached", math.nan) if run.status == Status.completed else (run_state(run.status, math.nan), math.nan)


def km_median(reached: list[float], censored: list[float]) -> float:
    """The Kaplan–Meier median of steps to target: ``reached`` are the steps of the runs that reached it, ``censored``
    the caps of those that did not (an unknown cap, NaN, counts as after every reached step). The median is the first
    step at which the estimated share of runs still short of the target is at most ½ (``scipy.stats.ecdf`` of
    ``CensoredData``); inf when it stays above ½ (fewer than half reached, all censored at the cap), NaN without runs.
    """
    if not reached:
        return math.inf if censored else math.nan
    right = [c if math.isfinite(c) else max(reached) for c in censored]
    survival = stats.ecdf(stats.CensoredData(uncensored=reached, right=right)).sf
    below = survival.quantiles[survival.probabilities <= 0.5]
    return float(below[0]) if below.size else math.inf


def _cap(record: Record) -> float:
    """The steps a run could take: epochs × steps per epoch (NaN when its record lacks either)."""
    epochs, steps = record.run.epochs, record.run.steps_per_epoch
    return math.nan if pd.isna(epochs) or pd.isna(steps) else float(epochs * steps)


def _km(records: list[Record]) -> float:
    """:func:`km_median` of finished runs: reached at their steps, censored at their cap otherwise."""
    finished = [r for r in records if r.state in FINISHED]
    return km_median([r.value for r in finished if r.state == "usable"],
                     [_cap(r) for r in finished if r.state != "usable"])


def _cell(spec: Spec, row: Row, column: Any, runs: pd.DataFrame) -> tuple[ScalingCell, list[str]]:
    """Choose the trial of one cell (fewest steps to target) and gather its reported seeds."""
    found = gather(spec, row, column, runs, _run_state)
    problems = found.problems
    candidates = []
    for index, (point, key) in enumerate(zip(found.points, found.keys, strict=True)):
        finished = [r for r in found.search(spec, key) if r.state in FINISHED]
        reached = [r.value for r in finished if r.state == "usable"]
        if reached:
            candidates.append((-len(reached) / len(finished), statistics.fmean(reached), index, point, key))
    records = list(found.records.values())
    base = {"expected": len(spec.reported_seeds), "failed": sum(r.state == "failed" for r in records),
            "search_done": found.search_done, "cap": max((c for r in records if math.isfinite(c := _cap(r))),
                                                         default=math.nan),
            "trials": [_km(found.search(spec, key)) for key in found.keys]}
    search = Counter(r.state for key in found.keys for r in found.search(spec, key))
    if not candidates:
        status = next((s for s, state in (("not_reached", "unreached"), ("diverged", "diverged"),
                                          ("failed", "failed")) if search[state]), "missing")
        return ScalingCell(row.label, column, status, **base), problems
    *_, point, key = min(candidates, key=lambda c: c[:3])
    chosen = [r for r in found.reported(spec, key) if r.state in FINISHED]
    reached = [r for r in chosen if r.state == "usable"]
    if spec.confirm_seeds and len(chosen) < len(spec.reported_seeds):
        absent = [str(s) for s in spec.reported_seeds
                  if (r := found.records.get((key, s))) is None or r.state not in FINISHED]
        problems.append(f"{found.where}: confirmation of the chosen point ({format_point(point)}): {len(chosen)} of "
                        f"{len(spec.reported_seeds)} seeds finished (seeds {', '.join(absent)} not)")
    if chosen:
        first = chosen[0].run
        base |= {"cap": max((c for r in chosen if math.isfinite(c := _cap(r))), default=base["cap"]),
                 "schedule": describe_schedule(first.config, first.lr, first.steps_per_epoch)}
    if not reached:
        status = "missing" if not chosen else "diverged" if all(r.state == "diverged" for r in chosen) \
            else "not_reached"
        return ScalingCell(row.label, column, status, finished=len(chosen), point=point, **base), problems
    steps = [r.value for r in reached]
    return ScalingCell(row.label, column, "ok", _km(chosen), statistics.fmean(steps),
                       std_of(steps), len(steps), len(chosen),
                       images=mean_of([r.run.images_to_target for r in reached]),
                       time_s=mean_of([r.run.time_to_target_s for r in reached]), point=point, values=steps,
                       edges=edges(row, column, point), **base), problems


def _run_target(config: Any) -> tuple[str, float] | None:
    """``(target.metric, target.value)`` of a run's resolved config, or ``None`` when it has none."""
    target = config.get("target") if isinstance(config, Mapping) else None
    try:
        return str(target["metric"]), float(target["value"])
    except (TypeError, KeyError, ValueError):
        return None


def _same_target(spec: Spec, target: tuple[str, float] | None) -> bool:
    return target is not None and target[0] == spec.target[0] and math.isclose(target[1], spec.target[1])


# --------------------------------------------------------------------------------------------- rendering
def _steps(value: float) -> str:
    """Steps as an integer from 100 on, else 3 significant digits (means of few seeds are not integers)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def cell_text(cell: ScalingCell) -> str:
    """The Kaplan–Meier median steps (``> cap`` when fewer than half the seeds reached the target) with
    ``(k/n reached)``, ``(n=f/e)`` (seeds finished), ``‡`` (runs failed) and the edge marks, or the status
    (``not reached`` with the steps the runs had)."""
    if cell.status != "ok":
        text = STATUS_TEXT[cell.status]
        if cell.status == "not_reached" and math.isfinite(cell.cap):
            text += f" (in {cell.cap:.0f} steps)"
        return text + ("‡" if cell.failed else "")
    text = _steps(cell.median) if math.isfinite(cell.median) else f"> {cell.cap:.0f}"
    text += f" ({cell.n}/{cell.finished} reached)"
    if cell.finished < cell.expected:
        text += f" (n={cell.finished}/{cell.expected})"
    return text + ("‡" if cell.failed else "") + edge_marks(cell)


@dataclass
class ScalingTable(Table):
    """A scaling table, with each row's fit of the critical batch size (by row label)."""

    fits: dict[str, CriticalBatch] = field(default_factory=dict)


def _evaluation_text(df: pd.DataFrame, spec: Spec) -> tuple[str, list[int]]:
    """How steps to target were measured (from the runs' configs), and the eval_every_steps values found."""
    mine = df[df["table"] == spec.name]
    every = sorted({int(c.get("eval_every_steps") or 0) for c in mine["config"] if isinstance(c, Mapping)})
    steps = [e for e in every if e]
    if not every:
        return "", []
    where = (f"every {' or '.join(map(str, steps))} optimizer steps (`eval_every_steps`) and at the end of every "
             "evaluated epoch" if steps else "at the end of every evaluated epoch only (`eval_every_steps=0`)")
    return (f"Steps to target are measured at evaluations {where}: each value is the first evaluation at or past "
            "the crossing, so it can be late by up to one evaluation interval."), steps


def _fit_section(spec: Spec, fits: dict[str, CriticalBatch]) -> list[str]:
    rows = [[label, str(fit.cells), _steps(fit.s_min) if fit.identified else "–", fit.text()]
            for label, fit in fits.items()]
    return ["## Critical batch size", "",
            "Per row, least squares of log S over the batch sizes whose Kaplan–Meier median is finite (the cell "
            "medians) against McCandlish et al.'s `S(B) = S_min (1 + B_noise / B)` (`scipy.optimize.curve_fit`, "
            "positive parameters); the critical batch size B_crit ≈ B_noise is where training takes twice the "
            f"minimum steps S_min. Reported only with at least {MIN_CELLS} such batch sizes and an estimate within the "
            f"measured ones; the interval is {CONFIDENCE * 100:g} % (Student t on log B_noise, n − 2 degrees of "
            f"freedom). A reported B_noise is uninformative when fewer than {MIN_INFORMATIVE} batch sizes were fitted "
            f"or its interval spans more than a factor {MAX_SPREAD:g}; the row says which.", "",
            md_table(["Method", "batch sizes fitted", "S_min (steps)", "B_noise ≈ B_crit"], rows), ""]


def _scope(spec: Spec, eval_steps: list[int]) -> list[str]:
    """What a study of this size can and cannot show."""
    smallest, largest = column_header(spec, spec.columns[0]), column_header(spec, spec.columns[-1])
    coarse = (f" With evaluations every {max(eval_steps)} steps, cells of a few hundred steps or fewer are coarse."
              if eval_steps else "")
    return ["## What this study can and cannot show", "",
            f"- It can show, for this model, dataset and target, whether doubling the batch size from {smallest} to "
            f"{largest} still roughly halves the steps to the target (the dotted line in `scaling.png`), where each "
            "optimizer leaves that regime, which optimizers reach the target at all within the epoch budget, and "
            "their order in steps at each batch size.",
            "- It cannot give the critical batch size of the paper-scale problems: B_crit grows as the target gets "
            "harder (McCandlish et al.), so a CPU-sized model, subset and target give a small problem's B_crit. "
            "A `not reached` or `> cap` cell may be the epoch budget (fewer steps at larger B) rather than the "
            "optimizer." + coarse,
            f"- B_noise needs at least {MIN_CELLS} batch sizes with a finite median and the knee of the curve inside "
            f"the measured range, and tells something only from {MIN_INFORMATIVE} batch sizes with an interval within "
            f"a factor {MAX_SPREAD:g}. With few seeds the medians are rough, and `time_to_target_s` (in "
            "`scaling.csv`) depends on the machine and its load.", ""]


def _selection_rule(spec: Spec) -> str:
    metric, value = spec.target
    target = f"steps until {metric} reaches {format_value(value)}"
    text = (f"Selection rule: {protocol_text(spec, target, 'the same target')}. Per row and batch size, among the "
            f"row's {spec.budget(spec.rows[0])} trial(s), the trial whose finished search seeds reached the target "
            "most often (all first), then in the fewest steps (mean over the seeds that reached it; ties go to the "
            "first trial)")
    if spec.confirm_seeds:
        text += "; it is re-run with the confirmation seeds (the search seeds' minimum is biased low by the selection)"
    return text + (". A run that did not reach the target (or diverged) is censored at its step cap, epochs × steps "
                   "per epoch. The cell shows the Kaplan–Meier median of the reported seeds' steps to target (the "
                   "first step by which at least half the seeds are estimated to have reached it) and `(k/n "
                   "reached)`: k of the n finished seeds reached it. `> N`: fewer than half reached the target "
                   "within the N-step cap. `(n=f/e)`: f of e seeds finished. `not reached (in N steps)`: no reported "
                   "seed (or no trial of the search) reached the target in the N steps its runs had. `div`: every "
                   "run diverged. `failed`: runs failed, none finished. `–`: no finished run. ‡: some runs failed "
                   "(see Problems).")


def _markdown(spec: Spec, cells: dict[tuple[str, Any], ScalingCell], fits: dict[str, CriticalBatch],
              problems: list[str], evaluation: str, eval_steps: list[int]) -> str:
    metric, value = spec.target
    headers = [column_header(spec, c) for c in spec.columns]
    schedules, per_cell = schedule_column(spec, cells)
    main = [[r.label, schedules[r.label], str(spec.runs_per_cell(r)),
             *(cell_text(cells[(r.label, c)]) for c in spec.columns)] for r in spec.rows]
    points = [[r.label, *(format_point(cells[(r.label, c)].point) or "–" for c in spec.columns)] for r in spec.rows]
    over = f"{len(spec.reported_seeds)} seed(s)" + (" (confirmation runs of the chosen trial)"
                                                    if spec.confirm_seeds else "")
    lines = [f"# {spec.display_title}", "",
             f"Table `{spec.name}`: optimizer steps until `{metric}` reaches {format_value(value)} (the target of the "
             f"runs' configs, `target.metric`/`target.value`), Kaplan–Meier median over {over}, against the batch "
             "size B.", "", *protocol_warnings(spec),
             md_table(["Method", "LR schedule", "Budget (runs/cell)", *headers], main), "", *edge_legend(spec, cells)]
    for text in (evaluation, budget_text(spec), _selection_rule(spec)):
        lines += [text, ""] if text else []
    if spec.notes:
        lines += [f"Notes: {spec.notes.strip()}", ""]
    lines += [*per_cell, *_fit_section(spec, fits)]
    if any(r.grid or r.trials is not None for r in spec.rows):
        lines += ["## Selected point per cell", "", md_table(["Method", *headers], points), ""]
    lines += _scope(spec, eval_steps)
    done = "None: every expected run finished (reached the target, did not, or diverged)."
    return page([*lines, *problems_section(problems, done)])


def _csv(spec: Spec, cells: dict[tuple[str, Any], ScalingCell]) -> str:
    lines = []
    for row in spec.rows:
        for column in spec.columns:
            cell = cells[(row.label, column)]
            lines.append([row.label, column, number(cell.median), number(cell.mean), number(cell.std),
                          number(cell.images), number(cell.time_s), cell.n, cell.finished, number(cell.cap),
                          json.dumps(cell.point) if cell.point is not None else "", cell.status])
    return csv_text(CSV_HEADER, lines)


# --------------------------------------------------------------------------------------------- figure
def _beyond(cell: ScalingCell) -> bool:
    """The cell's steps lie beyond its cap: fewer than half its seeds reached the target, none did, or all diverged."""
    return cell.status in ("not_reached", "diverged") or (cell.status == "ok" and math.isinf(cell.median))


def scaling_axes(spec: Spec, table: ScalingTable) -> Axes | None:
    """The axes of ``scaling.png``: median steps to target against B on log-log axes, one line per row (dots: the
    seeds that reached it), the perfect-scaling line through the best cell at the smallest batch size any row
    measured, each identified fit dashed, cells beyond their cap as open triangles at the top edge; ``None`` when no
    cell has a finite median."""
    measured = [c for c in table.cells.values() if math.isfinite(c.median)]
    if not measured:
        return None
    fig = Figure(figsize=(10, 5.2), layout="constrained")
    ax = fig.subplots()
    colours = row_colours(spec)
    batches = np.geomspace(min(spec.columns), max(spec.columns), 200)
    for row in spec.rows:
        mine = [table.cells[(row.label, c)] for c in spec.columns]
        line = [c for c in mine if math.isfinite(c.median)]
        if line:
            ax.plot([c.column for c in line], [c.median for c in line], "o-", color=colours[row.label],
                    label=row.label, markersize=4)
        seeds = [(c.column, v) for c in mine for v in c.values]
        if seeds:
            ax.plot(*zip(*seeds, strict=True), ".", color=colours[row.label], alpha=0.4, markersize=4)
        fit = table.fits[row.label]
        if fit.identified:
            ax.plot(batches, fit.s_min * (1 + fit.b_noise / batches), "--", color=colours[row.label], linewidth=0.8)
        beyond = [c.column for c in mine if _beyond(c)]
        if beyond:
            ax.plot(beyond, [0.97] * len(beyond), "^", mfc="none", color=colours[row.label], markersize=8,
                    transform=ax.get_xaxis_transform(), clip_on=False, label=None if line else row.label)
    first = min(c.column for c in measured)
    anchor = min((c for c in measured if c.column == first), key=lambda c: c.median)
    ax.plot(batches, anchor.median * first / batches, ":", color="grey",
            label=f"perfect scaling S ∝ 1/B (through {anchor.row} at {column_header(spec, first)})")
    ax.add_line(Line2D([], [], linestyle="none", marker=".", color="black", alpha=0.4,
                       label="a seed that reached the target"))
    if any(f.identified for f in table.fits.values()):
        ax.add_line(Line2D([], [], linestyle="--", linewidth=0.8, color="black",
                           label="fit S_min (1 + B_noise / B) (row colour)"))
    if any(_beyond(c) for c in table.cells.values()):
        ax.add_line(Line2D([], [], linestyle="none", marker="^", mfc="none", color="black",
                           label="beyond the cap: under half the seeds reached, or diverged (top edge)"))
    values = [c.median for c in measured] + [v for c in table.cells.values() for v in c.values]
    ax.set_ylim(min(values) / 2, max(values) * 3)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(spec.columns, [format_value(c) for c in spec.columns])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(LogFormatter())  # plain numbers (20, 50, 100) rather than 2×10¹
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    fig.legend(*ax.get_legend_handles_labels(), loc="outside center right", fontsize="small")
    ax.set_xlabel("batch size B")
    ax.grid(alpha=0.3, which="both")
    return ax




class Scaling(TableKind):
    """Scaling tables (the module docstring)."""

    name = "scaling"
    metric = METRIC
    csv = "scaling.csv"
    compare_fields = COMPARE_FIELDS
    figure_files = (FIGURE, "tuning_curve.png")

    def check(self, name: str, raw: Mapping[str, Any], rows: list[Row], select_on: str) -> dict[str, Any]:
        """The spec's target ``(metric, value)`` from its base overrides: every cell is measured against it."""
        if raw["columns"]["key"] != "batch_size":
            raise spec_error(name, f"kind scaling plots steps to target against the batch size, so columns.key must "
                                   f"be batch_size (got {raw['columns']['key']!r})")
        if raw.get("metric", self.metric) != self.metric:
            raise spec_error(name, f"the metric of kind scaling is {self.metric} (got {raw['metric']!r}); drop metric")
        for key in ("compare", "claims", "chance"):
            if raw.get(key) is not None:
                raise spec_error(name, f"{key} applies to accuracy tables, not to kind scaling; remove it (or set it "
                                       "to null)")
        target = target_of(raw.get("base"))
        if target is None:
            raise spec_error(name, "kind scaling measures steps to a target: add target.metric=<metric> and "
                                   "target.value=<number> to base (e.g. target.metric=test_top1, target.value=86)")
        for row in rows:
            keys = [*assignments(row.overrides), *row.grid, *(row.trials[raw["columns"]["values"][0]][0]
                                                              if row.trials else ())]
            if any(key.startswith("target.") for key in keys):
                raise spec_error(name, f"row {row.label!r} sets {next(k for k in keys if k.startswith('target.'))}: "
                                       "every cell of a scaling table has the same target; set target.* in base only")
        if not target[0].startswith(f"{select_on}_"):
            raise spec_error(name, f"target.metric={target[0]} is not measured on the selection split (select_on: "
                                   f"{select_on}); use target.metric={select_on}_{target[0].split('_', 1)[-1]}")
        return {"metric": self.metric, "target": target}

    def smoke(self, base: tuple[str, ...]) -> dict[str, Any]:
        return {"target": target_of(base)}

    def cell(self, spec: Spec, row: Row, column: Any, runs: pd.DataFrame) -> tuple[ScalingCell, list[str]]:
        return _cell(spec, row, column, runs)

    def select(self, spec: Spec, df: pd.DataFrame) -> tuple[dict[tuple[str, Any], ScalingCell], list[str]]:
        """Every cell and the problems found; runs of the table measured against another target than the spec's
        (or none) are left out and listed."""
        targets = df["config"].map(_run_target)
        other = (df["table"] == spec.name) & ~targets.map(lambda t: _same_target(spec, t)).astype(bool)
        problems = [f"{n} run(s) measured against target {t[0]}={format_value(t[1])} instead of the spec's "
                    f"{spec.target[0]}={format_value(spec.target[1])} (ignored)" if t else
                    f"{n} run(s) without target.metric/target.value in their config (ignored)"
                    for t, n in Counter(targets[other]).items()]
        cells, found = select_cells(spec, df[~other], self.cell)
        return cells, problems + found

    def build(self, spec: Spec, df: pd.DataFrame) -> ScalingTable:
        """Select every cell from the collected runs ``df``, fit each row, and render ``scaling.md`` and
        ``scaling.csv``."""
        cells, problems = self.select(spec, df)
        fits = {}
        for row in spec.rows:
            measured = [cells[(row.label, c)] for c in spec.columns if math.isfinite(cells[(row.label, c)].median)]
            fits[row.label] = fit_critical_batch([float(c.column) for c in measured], [c.median for c in measured])
        evaluation, eval_steps = _evaluation_text(df, spec)
        files = {"scaling.md": _markdown(spec, cells, fits, problems, evaluation, eval_steps),
                 self.csv: _csv(spec, cells)}
        return ScalingTable(spec, cells, files, problems, fits)

    def figures(self, spec: Spec, table: Table, df: pd.DataFrame, out: Path) -> list[Path]:
        """``scaling.png`` (:func:`scaling_axes`, when some cell has a finite median) and ``tuning_curve.png`` (the
        fewest steps among the first k trials, with how many trials reached the target)."""
        metric, value = spec.target
        target = f"{metric} reaches {format_value(value)}"
        ax = scaling_axes(spec, table)
        paths = [] if ax is None else save(
            ax.figure, [ax], f"optimizer steps until {target}",
            figure_title(spec, f"steps to target vs batch size (Kaplan–Meier median over {len(spec.reported_seeds)} "
                               "seed(s))"), out / FIGURE, shared_legend=False)
        return paths + tuning_curve(
            spec, table.cells, out, "fewest steps so far",
            figure_title(spec, f"tuning curve: fewest steps until {target} among the first k trials (median over "
                               f"{len(spec.seeds)} search seed(s))"), improve=np.fmin.accumulate,
            count="trials reached the target (by column)")


SCALING = Scaling()
