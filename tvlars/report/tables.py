"""Collected runs + an experiment spec → the paper-style table (Markdown, LaTeX, CSV) and its problems.

Selection per row × column: each grid point's (or search trial's) metric is averaged over its completed seeds;
the point with the best mean wins (points where a seed diverged rank after every point where none did; ties →
first in trial order). The cell shows that mean ± sample std over seeds, or, when the spec gives
``confirm_seeds``, the mean ± std of the chosen point re-run with those seeds.

Statistics (:func:`welch`): two cells differ beyond seed noise when Welch's t-test over their per-seed values
(``scipy.stats.ttest_ind(equal_var=False)``, two-sided) gives p < :data:`ALPHA`. A column's best cell is bold
only then (against the runner-up); the claim section prints every difference with its 95 % interval and p.
A cell whose mean is within :data:`CHANCE_MARGIN` points of chance (100 / classes %) is marked and never compared.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from scipy import stats

from tvlars.errors import UserError
from tvlars.records import Status
from tvlars.report.collect import normalize, point_key
from tvlars.spec import Row, Spec, slug

METRIC_TEXT = {"best_test_top1": "best-epoch test top-1 (%)", "final_test_top1": "final-epoch test top-1 (%)"}
ALPHA = 0.05  # significance level of every test in the tables
CHANCE_MARGIN = 5.0  # points above chance level within which a cell counts as "at chance"
_SMALL_SCALE = re.compile(r"mini|smoke", re.IGNORECASE)
# Preference among several records of the same (point, seed): the most finished one counts. ``unreached``
# (completed without reaching the target) exists in scaling tables only.
_RANK = {"usable": 0, "unreached": 1, "diverged": 2, "running": 3, "failed": 4}
FINISHED = ("usable", "unreached", "diverged")  # record states that a sweep never reruns


@dataclass
class Cell:
    """The selected result of one row × column."""

    row: str
    column: Any
    status: str  # ok | diverged (every run diverged) | failed (runs failed, none usable) | missing (no usable run)
    mean: float = math.nan
    std: float = math.nan  # sample std over seeds; NaN with one seed
    n: int = 0  # seeds averaged at the chosen point
    expected: int = 0  # seeds the spec asks for at the reported point
    point: dict[str, Any] | None = None  # the chosen grid point / search trial
    diverged: int = 0  # seeds that diverged at the reported point
    runs: list[str] = field(default_factory=list)  # run directories averaged at the reported point
    values: list[float] = field(default_factory=list)  # the per-seed metric behind mean and std
    failed: int = 0  # failed runs anywhere in the cell (listed under Problems)
    chance: float = math.nan  # chance-level accuracy (%) of the cell's dataset
    trials: list[float] = field(default_factory=list)  # per point in trial order: mean over search seeds (NaN: none)
    search_done: bool = False  # every point × search seed finished (completed or diverged)

    @property
    def at_chance(self) -> bool:
        """The mean is within :data:`CHANCE_MARGIN` points of chance level (kept out of every claim)."""
        return self.status == "ok" and self.mean <= self.chance + CHANCE_MARGIN


@dataclass
class Table:
    """The rendered table, the selection behind it, and what was missing or broken."""

    spec: Spec
    cells: dict[tuple[str, Any], Cell]  # (row label, column value) -> cell
    markdown: str
    latex: str
    csv: str
    problems: list[str]
    bold: set[tuple[str, Any]] = field(default_factory=set)  # cells that beat their column's runner-up

    @property
    def files(self) -> dict[str, str]:
        """Output file name -> text."""
        return {"table.md": self.markdown, "table.tex": self.latex, "table.csv": self.csv}


@dataclass(frozen=True)
class Difference:
    """``a − b`` in points with its Welch 95 % confidence interval and two-sided p-value."""

    diff: float
    low: float
    high: float
    p: float

    @property
    def significant(self) -> bool:
        return self.p < ALPHA

    def text(self) -> str:
        p = "p < 0.001" if self.p < 0.001 else f"p = {self.p:.3f}"
        verdict = "significant" if self.significant else "not significant"
        return f"{self.diff:+.2f} points (95 % CI {self.low:+.2f} to {self.high:+.2f}, {p}: {verdict})"


def welch(a: Cell, b: Cell) -> tuple[Difference | None, str]:
    """Welch's t-test of ``a.values`` against ``b.values``: the difference, or ``None`` and why no test is possible.

    t = (x̄_a − x̄_b) / sqrt(s_a²/n_a + s_b²/n_b), with Welch–Satterthwaite degrees of freedom (scipy).
    """
    if min(len(a.values), len(b.values)) < 2:
        return None, "one seed: no estimate of seed noise"
    if statistics.pvariance(a.values) == 0 and statistics.pvariance(b.values) == 0:
        return None, "no spread over seeds in either cell"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-identical values: scipy warns, the result stands
        result = stats.ttest_ind(a.values, b.values, equal_var=False)
        interval = result.confidence_interval(1 - ALPHA)
    return Difference(a.mean - b.mean, float(interval.low), float(interval.high), float(result.pvalue)), ""


# --------------------------------------------------------------------------------------------- formatting
def column_header(spec: Spec, column: Any) -> str:
    """``B=512`` for batch-size columns, ``<key>=<value>`` otherwise."""
    key = "B" if spec.column_key == "batch_size" else spec.column_key.rsplit(".", 1)[-1]
    return f"{key}={column}"


def format_value(value: Any) -> str:
    """Compact grid value: ``1e-05`` → ``1e-5``, ``1.0`` → ``1``, ``0.001`` as it is, strings as they are."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def format_point(point: dict[str, Any] | None) -> str:
    """``{"optimizer.lr": 0.3, "optimizer.lam": 1e-5}`` → ``lr=0.3, lam=1e-5`` (short keys when unique)."""
    if not point:
        return ""
    short = [k.rsplit(".", 1)[-1] for k in point]
    names = short if len(set(short)) == len(short) else list(point)
    return ", ".join(f"{name}={format_value(v)}" for name, v in zip(names, point.values(), strict=True))


def _mean_std(cell: Cell, digits: int = 2) -> str:
    text = f"{cell.mean:.{digits}f}"
    return text if math.isnan(cell.std) else f"{text} ± {cell.std:.{digits}f}"


# --------------------------------------------------------------------------------------------- selection
def _state(status: Any, value: float) -> str:
    """A run's place in selection: usable, diverged, running (also interrupted: it resumes) or failed."""
    if status == Status.completed:
        return "usable" if math.isfinite(value) else "diverged"
    if status in (Status.running, Status.interrupted):
        return "running"
    return str(status) if status in (Status.diverged, Status.failed) else "failed"


def _in_columns(runs: pd.DataFrame, columns: list[Any]) -> pd.Series:
    """Which runs sit in one of ``columns`` (compared after :func:`normalize`)."""
    targets = [normalize(c) for c in columns]
    return runs["column"].map(lambda c: normalize(c) in targets).astype(bool)


@dataclass(frozen=True)
class Record:
    """One run of a cell as the selection sees it: ``state`` is usable, unreached, diverged, running or failed."""

    state: str
    value: float
    run_dir: str
    error: str | None
    num_classes: int | None
    run: Any = None  # the collected row (a pandas namedtuple), for fields beyond the selection value


def _listing(items: list[str]) -> str:
    return "; ".join(items[:4]) + (f"; … {len(items) - 4} more" if len(items) > 4 else "")


def _chance(spec: Spec, records: list[Record], where: str) -> float:
    """Chance-level accuracy (%): 100 / num_classes from the runs' summaries, else the spec's ``chance``."""
    classes = next((r.num_classes for r in records if r.num_classes), None)
    if classes:
        return 100.0 / classes
    if spec.chance is not None:
        return spec.chance
    where_spec = spec.path or f"tvlars/experiments/{spec.name}.yaml"
    raise UserError(f"table {spec.name}: the chance level of {where} is unknown (its runs' summary.json has no "
                    f"num_classes); add `chance: <accuracy in %>` (e.g. 10.0 for 10 classes) to {where_spec}")


@dataclass
class Gathered:
    """A cell's runs, one record per (point, seed) of the spec, and the problems met while gathering them."""

    where: str  # "row @ B=512", for messages
    points: list[dict[str, Any]]  # in trial order
    keys: list[str]  # point_key of each point
    records: dict[tuple[str, int], Record]  # (point key, seed) -> the most finished record
    problems: list[str]
    search_done: bool  # every point × search seed finished (FINISHED states)

    def search(self, spec: Spec, key: str) -> list[Record]:
        """The search-seed records of the point ``key``."""
        return [self.records[(key, s)] for s in spec.seeds if (key, s) in self.records]

    def reported(self, spec: Spec, key: str) -> list[Record]:
        """The records of the point ``key`` with the seeds the table reports (confirmation seeds when given)."""
        return [self.records[(key, s)] for s in spec.reported_seeds if (key, s) in self.records]


def gather(spec: Spec, row: Row, column: Any, runs: pd.DataFrame,
           state: Callable[[Any], tuple[str, float]]) -> Gathered:
    """The runs of one cell, deduplicated per (point, seed) (the most finished record counts), with the problems:
    runs outside the spec, duplicates, failed runs (with their error line), and missing or unfinished search runs.
    ``state(run)`` gives a collected run's record state and selection value."""
    points = row.points(column)
    keys = [point_key(p) for p in points]
    seeds = [int(s) for s in spec.seeds]
    wanted = set(seeds) | {int(s) for s in spec.reported_seeds}
    where = f"{row.label} @ {column_header(spec, column)}"
    problems: list[str] = []
    best: dict[tuple[str, int], Record] = {}
    duplicates = outside = 0
    for run in runs.itertuples(index=False):
        if run.point not in keys or pd.isna(run.seed) or int(run.seed) not in wanted:
            outside += 1
            continue
        record = Record(*state(run), run.run_dir, run.error, None if pd.isna(run.num_classes)
                        else int(run.num_classes), run)
        slot = (run.point, int(run.seed))
        if slot in best:
            duplicates += 1
            if _RANK[record.state] >= _RANK[best[slot].state]:
                continue
        best[slot] = record
    if outside:
        problems.append(f"{where}: {outside} run(s) at grid points or seeds not in the spec (ignored)")
    if duplicates:
        problems.append(f"{where}: {duplicates} duplicate run(s) of the same grid point and seed "
                        "(the most finished one counted)")
    for (key, seed), record in best.items():
        if record.state == "failed":
            point = format_point(points[keys.index(key)])
            problems.append(f"{where}: {point + ' ' if point else ''}seed {seed} failed: "
                            f"{record.error or 'no error recorded in summary.json'}")

    search = [best[(k, s)] for k in keys for s in seeds if (k, s) in best]
    expected = len(keys) * len(seeds)
    missing = [f"{format_point(p)} seed {s}".lstrip() for p, k in zip(points, keys, strict=True)
               for s in seeds if (k, s) not in best]
    counts = Counter(r.state for r in search)
    finished = sum(counts[state] for state in FINISHED)
    issues = [f"{n} {state}" for state in ("running", "failed") if (n := counts[state])]
    if missing:
        issues.insert(0, f"{len(missing)} missing ({_listing(missing)})")
    if issues:
        problems.append(f"{where}: {finished} of {expected} runs finished ({len(keys)} grid point(s) × "
                        f"{len(seeds)} seed(s)); " + ", ".join(issues))
    return Gathered(where, points, keys, best, problems, finished == expected)


def _cell(spec: Spec, row: Row, column: Any, runs: pd.DataFrame) -> tuple[Cell, list[str]]:
    """Select the point of one cell and gather its reported seeds; returns the cell and its problems."""

    def state(run: Any) -> tuple[str, float]:  # chosen by the selection metric (validation, by default)
        value = float(getattr(run, spec.selection_metric))
        return _state(run.status, value), value

    found = gather(spec, row, column, runs, state)
    where, problems, reported = found.where, found.problems, spec.reported_seeds
    trials, candidates = [], []
    for index, (point, key) in enumerate(zip(found.points, found.keys, strict=True)):
        records = found.search(spec, key)
        values = [r.value for r in records if r.state == "usable"]
        trials.append(statistics.fmean(values) if values else math.nan)
        if values:
            diverged = sum(r.state == "diverged" for r in records)
            candidates.append((diverged > 0, -statistics.fmean(values), index, point, key))
    counts = Counter(r.state for key in found.keys for r in found.search(spec, key))
    base = {"expected": len(reported), "failed": sum(r.state == "failed" for r in found.records.values()),
            "trials": trials, "search_done": found.search_done}
    if not candidates:
        status = "diverged" if counts["diverged"] else "failed" if counts["failed"] else "missing"
        return Cell(row.label, column, status, **base), problems
    _, _, _, point, key = min(candidates, key=lambda c: c[:3])
    chosen = found.reported(spec, key)
    used = [r for r in chosen if r.state == "usable"]
    diverged = sum(r.state == "diverged" for r in chosen)
    if spec.confirm_seeds and len(used) < len(reported):
        absent = [str(s) for s in reported if (r := found.records.get((key, s))) is None or r.state != "usable"]
        problems.append(f"{where}: confirmation of the chosen point ({format_point(point)}): {len(used)} of "
                        f"{len(reported)} seeds usable (seeds {', '.join(absent)} not)")
    if not used:
        status = "diverged" if diverged else "missing"
        return Cell(row.label, column, status, point=point, diverged=diverged, **base), problems
    values = [float(getattr(r.run, spec.metric)) for r in used]  # reported: the metric itself (test)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    if diverged:
        problems.append(f"{where}: the chosen point ({format_point(point)}) had {diverged} diverged seed(s); "
                        "its mean is over the completed seeds only (marked †)")
    cell = Cell(row.label, column, "ok", statistics.fmean(values), std, len(values), point=point, diverged=diverged,
                runs=[r.run_dir for r in used], values=values,
                chance=_chance(spec, list(found.records.values()), where), **base)
    return cell, problems


def _unplaced(spec: Spec, runs: pd.DataFrame) -> list[str]:
    """Runs of this table whose row or column is not in the spec."""
    labels = {r.label for r in spec.rows}
    problems = [f"{n} run(s) with row label {label!r}, not a row of the spec (ignored)"
                for label, n in runs.loc[~runs["row"].isin(labels), "row"].astype(str).value_counts().items()]
    stray = runs[runs["row"].isin(labels) & ~_in_columns(runs, spec.columns)]
    problems += [f"{n} run(s) at column {column!r}, not a column of the spec (ignored)"
                 for column, n in stray["column"].astype(str).value_counts().items()]
    return problems


CellSelector = Callable[[Spec, Row, Any, pd.DataFrame], tuple[Any, list[str]]]


def select(spec: Spec, df: pd.DataFrame, cell: CellSelector = _cell) -> tuple[dict[tuple[str, Any], Any], list[str]]:
    """Every cell of the table and the problems found (missing, running, failed, corrupt, stray runs);
    ``cell(spec, row, column, runs)`` selects one cell from its runs (scaling tables pass their own)."""
    runs = df[df["table"] == spec.name]
    corrupt = df[df["status"] == "corrupt"]
    problems = [f"unreadable summary.json ({problem}; the run cannot be placed in a cell): {path}"
                for path, problem in zip(corrupt["path"], corrupt["problem"], strict=True)]
    problems += _unplaced(spec, runs)
    cells = {}
    for row in spec.rows:
        mine = runs[runs["row"] == row.label]
        for column in spec.columns:
            cells[(row.label, column)], found = cell(spec, row, column, mine[_in_columns(mine, [column])])
            problems += found
    return cells, problems


def significant_best(spec: Spec, cells: dict[tuple[str, Any], Cell]) -> set[tuple[str, Any]]:
    """Per column, the best cell if it beats the runner-up beyond seed noise (Welch, p < ALPHA) and is above
    chance level; columns with fewer than two numbers, or a test that cannot be made, have none."""
    bold = set()
    for column in spec.columns:
        ranked = sorted((cells[(r.label, column)] for r in spec.rows if cells[(r.label, column)].status == "ok"),
                        key=lambda c: -c.mean)
        if len(ranked) < 2 or ranked[0].at_chance:
            continue
        difference, _ = welch(ranked[0], ranked[1])
        if difference is not None and difference.significant and difference.diff > 0:
            bold.add((ranked[0].row, column))
    return bold


def _budget_text(spec: Spec) -> str:
    """How many runs each cell had (equal for every row: the spec loader refuses unequal budgets)."""
    row = spec.rows[0]
    kind = "search trial(s)" if row.trials is not None else "grid point(s)"
    text = f"Budget: every row had {spec.budget(row)} {kind} × {len(spec.seeds)} seed(s)"
    extra = len(set(spec.confirm_seeds) - set(spec.seeds))
    if spec.confirm_seeds:
        text += f", then the chosen point re-run with seeds {', '.join(map(str, spec.confirm_seeds))} ({extra} new)"
    return text + f" = {spec.runs_per_cell(row)} runs per cell."


def _selection_rule(spec: Spec) -> str:
    seeds = ", ".join(map(str, spec.seeds))
    text = (f"Selection rule: for every row and column, each point's {METRIC_TEXT[spec.metric]} is averaged over "
            f"seeds {seeds} (completed runs only); the point with the best mean is chosen (points where a seed "
            "diverged rank after all others; ties go to the first point in trial order)")
    if spec.confirm_seeds:
        text += (f"; the chosen point is re-run with seeds {', '.join(map(str, spec.confirm_seeds))}, and the cell "
                 "shows those runs' mean ± sample standard deviation (not the search seeds').")
    else:
        text += ", and the cell shows that mean ± the sample standard deviation over seeds."
    return text + (" `div`: every run of the cell diverged. `failed`: runs failed and none completed. `–`: no usable "
                   "run. `(n=k/m)`: only k of the m seeds completed. †: a seed diverged at the chosen point. "
                   "‡: some runs of the cell failed (see Problems).")


def _statistics_rule(spec: Spec) -> str:
    text = (f"Bold: the column's best mean, only where it beats the runner-up beyond seed noise: Welch's t-test over "
            f"the seeds of the two cells (two-sided, p < {ALPHA:g}) and above chance level.")
    if len(spec.reported_seeds) < 2:
        text += " **Nothing is bold in this table: with one seed per cell there is no estimate of seed noise.**"
    return text + (f" `(chance)`: the mean is within {CHANCE_MARGIN:g} points of chance level (100 / number of "
                   "classes, from each run's summary, else the spec's `chance`); such cells never count in the "
                   "claim section.")


# --------------------------------------------------------------------------------------------- renderers
def _cell_text(cell: Cell, bold: bool = False) -> str:
    """``mean ± std`` with its marks: ``(n=k/m)``, ``†`` (a seed diverged), ``‡`` (runs failed), ``(chance)``."""
    text = f"**{_mean_std(cell)}**" if bold else _mean_std(cell)
    if cell.n < cell.expected:
        text += f" (n={cell.n}/{cell.expected})"
    text += ("†" if cell.diverged else "") + ("‡" if cell.failed else "")
    return text + (" (chance)" if cell.at_chance else "")


def _md_cell(cell: Cell, bold: bool) -> str:
    if cell.status != "ok":
        return {"diverged": "div", "failed": "failed"}.get(cell.status, "–") + ("‡" if cell.failed else "")
    return _cell_text(cell, bold)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (pipes in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class _Tally:
    """The method against one kind of baseline over the columns."""

    wins: int = 0  # columns where the method is significantly better
    losses: int = 0  # significantly worse
    compared: int = 0  # columns where both have a number above chance
    untestable: int = 0  # of those, columns where no test could be made (one seed, no spread)
    beaten_only: int = 0  # columns where every such baseline diverged, failed or sat at chance while the method trained

    def text(self, method: str, kind: str, columns: int) -> str:
        text = (f"{method} beats the best {kind} significantly in {self.wins} of {self.compared} columns "
                f"(columns where both have a number above chance level, of {columns}); it is significantly worse "
                f"in {self.losses}")
        if self.untestable:
            text += f"; {self.untestable} column(s) could not be tested (one seed or no spread over seeds)"
        if self.beaten_only:
            text += (f"; in {self.beaten_only} column(s) every {kind} diverged, failed or stayed at chance level "
                     f"while {method} trained (not counted)")
        return text + "."


def _versus(mine: Cell, others: list[Cell], what: str, tally: _Tally) -> str:
    """One comparison of a method cell with the best above-chance cell of ``others``; records it in ``tally``."""
    ok = [c for c in others if c.status == "ok" and not c.at_chance]
    if not ok:
        if others and all(c.status in ("diverged", "failed") or c.at_chance for c in others):
            tally.beaten_only += 1
            return f"vs {what}: every such row diverged, failed or is at chance level"
        return f"vs {what}: no row has a number"
    other = max(ok, key=lambda c: c.mean)
    tally.compared += 1
    difference, reason = welch(mine, other)
    if difference is None:
        tally.untestable += 1
        return f"vs {what} {other.row} {_cell_text(other)}: {mine.mean - other.mean:+.2f} points ({reason}; no test)"
    tally.wins += difference.significant and difference.diff > 0
    tally.losses += difference.significant and difference.diff < 0
    return f"vs {what} {other.row} {_cell_text(other)}: {difference.text()}"


def _claim(spec: Spec, cells: dict[tuple[str, Any], Cell]) -> list[str]:
    """The paper's claim, then per column each method row vs the best no-warm-up baseline and the best baseline,
    with Welch's test; rows come from the spec's ``compare``."""
    lines = ["## Paper's claim vs our numbers", "", f"> {spec.claim or '(the spec states no claim)'}", ""]
    compare = spec.compare
    if compare is None:
        return [*lines, "The spec declares no `compare:` rows (method and baselines), so no comparison is made."]
    kinds = ([("no-warm-up baseline", compare.no_warmup)] if compare.no_warmup else []) + \
        [("baseline overall", compare.baselines)]
    lines.append(f"Each method row against the best {' and the best '.join(k for k, _ in kinds)} (by mean, above "
                 f"chance level) per column: difference in points, Welch's 95 % interval and two-sided p-value.")
    lines.append("")
    for method in compare.method:
        tallies = {kind: _Tally() for kind, _ in kinds}
        for column in spec.columns:
            mine, head = cells[(method, column)], column_header(spec, column)
            if mine.status != "ok":
                lines.append(f"- {head}: {method} has no number ({_md_cell(mine, False)}); not compared.")
                continue
            if mine.at_chance:
                lines.append(f"- {head}: {method} {_cell_text(mine)} is within {CHANCE_MARGIN:g} points of chance "
                             f"level ({mine.chance:.1f} %); not compared.")
                continue
            parts = [_versus(mine, [cells[(b, column)] for b in group], f"the best {kind}", tallies[kind])
                     for kind, group in kinds]
            lines.append(f"- {head}: {method} {_cell_text(mine)} " + "; ".join(parts) + ".")
        lines.append("")
        for kind, _ in kinds:
            lines += [tallies[kind].text(method, kind, len(spec.columns)), ""]
    if _SMALL_SCALE.search(spec.display_title):
        lines.append(f"This is a small-scale run ({spec.display_title}): it tests the direction of the claim at "
                     "reduced scale and does not reproduce the paper's absolute numbers.")
    return lines


def _markdown(spec: Spec, cells: dict[tuple[str, Any], Cell], bold: set[tuple[str, Any]], problems: list[str]) -> str:
    headers = [column_header(spec, c) for c in spec.columns]
    main = [[r.label, str(spec.runs_per_cell(r)), *(_md_cell(cells[(r.label, c)], (r.label, c) in bold)
                                                   for c in spec.columns)] for r in spec.rows]
    points = [[r.label, *(format_point(cells[(r.label, c)].point) or "–" for c in spec.columns)] for r in spec.rows]
    seeds = spec.reported_seeds
    over = f"mean ± std over {len(seeds)} seed(s)" + (" (confirmation runs of the chosen point)"
                                                       if spec.confirm_seeds else "")
    lines = [f"# {spec.display_title}", "", f"Table `{spec.name}`: {METRIC_TEXT[spec.metric]}, {over}.", "",
             md_table(["Method", "Budget (runs/cell)", *headers], main), "", _statistics_rule(spec), "",
             _budget_text(spec), "", _selection_rule(spec), ""]
    if spec.notes:
        lines += [f"Notes: {spec.notes.strip()}", ""]
    if any(r.grid or r.trials is not None for r in spec.rows):
        lines += ["## Selected point per cell", "", md_table(["Method", *headers], points), ""]
    lines += [*_claim(spec, cells), ""]
    done = "None: every expected run finished (completed or diverged)."
    lines += ["## Problems", ""] + ([f"- {p}" for p in problems] or [done])
    return "\n".join(lines).rstrip() + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--",
                "±": r"$\pm$", "†": r"$^\dagger$", "×": r"$\times$"}


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters (and a few Unicode symbols) in ``text``."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def _tex_cell(cell: Cell, bold: bool) -> str:
    if cell.status != "ok":
        return {"diverged": "div", "failed": "failed"}.get(cell.status, "--") + (r"$^\ddagger$" if cell.failed else "")
    text = f"{cell.mean:.2f}" + ("" if math.isnan(cell.std) else f" $\\pm$ {cell.std:.2f}")
    if bold:
        text = f"\\textbf{{{text}}}"
    if cell.n < cell.expected:
        text += f"$^{{({cell.n}/{cell.expected})}}$"
    if cell.diverged:
        text += r"$^\dagger$"
    if cell.failed:
        text += r"$^\ddagger$"
    if cell.at_chance:
        text += r"$^{c}$"
    point = format_point(cell.point)
    return text + (f" {{\\scriptsize ({tex_escape(point)})}}" if point else "")


def _latex(spec: Spec, cells: dict[tuple[str, Any], Cell], bold: set[tuple[str, Any]]) -> str:
    head = " & ".join(["Method", "Budget", *(tex_escape(column_header(spec, c)) for c in spec.columns)])
    body = [" & ".join([tex_escape(r.label), str(spec.runs_per_cell(r)),
                        *(_tex_cell(cells[(r.label, c)], (r.label, c) in bold) for c in spec.columns)]) + r" \\"
            for r in spec.rows]
    single = " (one seed: nothing is bold)" if len(spec.reported_seeds) < 2 else ""
    caption = (f"{tex_escape(spec.display_title)}. {tex_escape(METRIC_TEXT[spec.metric])}: mean $\\pm$ sample std "
               f"over {len(spec.reported_seeds)} seed(s) at the point (small text) with the best mean; budget = runs "
               f"per cell; bold: best of the column and better than the runner-up by Welch's t-test, "
               f"p $<$ {ALPHA:g}{single}; $^{{c}}$: within {CHANCE_MARGIN:g} points of chance level; $^{{(k/m)}}$: "
               "only k of m seeds completed; $^\\dagger$: a seed diverged at the chosen point; $^\\ddagger$: runs "
               "failed; div: every run diverged; --: no run.")
    return "\n".join([r"\begin{table}[t]", r"\centering", f"\\caption{{{caption}}}",
                      f"\\label{{tab:{slug(spec.name)}}}", f"\\begin{{tabular}}{{lr{'c' * len(spec.columns)}}}",
                      r"\toprule", head + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
                      r"\end{table}"]) + "\n"


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def _csv(spec: Spec, cells: dict[tuple[str, Any], Cell]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "column", "metric", "mean", "std", "n_seeds", "chosen_point", "status"])
    for row in spec.rows:
        for column in spec.columns:
            cell = cells[(row.label, column)]
            writer.writerow([row.label, column, spec.metric, _number(cell.mean), _number(cell.std), cell.n,
                             json.dumps(cell.point) if cell.point is not None else "", cell.status])
    return buffer.getvalue()


def build_table(spec: Spec, df: pd.DataFrame) -> Table:
    """Select every cell from the collected runs ``df`` and render the table in Markdown, LaTeX and CSV."""
    cells, problems = select(spec, df)
    bold = significant_best(spec, cells)
    return Table(spec, cells, _markdown(spec, cells, bold, problems), _latex(spec, cells, bold), _csv(spec, cells),
                 problems, bold)


def status_summary(spec: Spec, df: pd.DataFrame) -> str:
    """One line: runs of this table by status, corrupt records, and runs of other tables ignored."""
    mine = df[df["table"] == spec.name]
    counts = ", ".join(f"{n} {status}" for status, n in mine["status"].value_counts().items()) or "none"
    expected = sum(spec.runs_per_cell(r) for r in spec.rows) * len(spec.columns)
    corrupt = int((df["status"] == "corrupt").sum())
    other = len(df) - len(mine) - corrupt
    return (f"{len(mine)} run(s) of table {spec.name} (expected {expected}): {counts}; {corrupt} unreadable "
            f"summary.json; {other} run(s) of other tables or unlabelled ignored")
