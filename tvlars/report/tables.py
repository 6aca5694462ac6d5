"""Collected runs + an experiment spec → the paper-style table (Markdown, LaTeX, CSV) and its problems.

Selection per row × column: each grid point's (or search trial's) selection metric (the spec's ``metric`` on its
``select_on`` split: validation by default) is averaged over its completed search seeds; the point with the best
mean wins (points where a seed diverged rank after every point where none did; ties → first in trial order). The
cell shows the reported ``metric`` (test) of that point: mean ± sample std over the search seeds, or, when the spec
gives ``confirm_seeds``, over the chosen point re-run with those seeds.

Statistics (:mod:`tvlars.report.significance`): two cells differ beyond seed noise when Welch's t-test over their
per-seed values gives a Holm-adjusted p < ALPHA. A column's best cell is bold only then (against the runner-up; the
table's bold tests are one Holm family); the claim section (method rows against baselines, the spec's named
``claims`` with their equivalence tests) is another, and prints every difference with its 95 % interval, raw and
adjusted p. A cell whose mean is within :data:`CHANCE_MARGIN` points of chance (100 / classes %) is marked and never
compared.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tvlars.errors import UserError
from tvlars.records import Status
from tvlars.report.collect import normalize, point_key
from tvlars.report.lr_schedule import describe_schedule
from tvlars.report.significance import ALPHA, Difference, Equivalence, adjust, tost, welch
from tvlars.spec import Claim, Row, Spec, slug

METRIC_TEXT = {"best_test_top1": "best-epoch test top-1 (%)", "final_test_top1": "final-epoch test top-1 (%)",
               "final_val_top1": "final-epoch validation top-1 (%)"}
SPLIT_TEXT = {"val": "validation", "test": "test"}
EDGE_MARKS = {"smallest": "◂", "largest": "▸"}  # the chosen point sits at this end of a searched range
MIN_EDGE_VALUES = 3  # distinct values a dimension needs among a cell's trials before its ends mean anything
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
    edges: list[tuple[str, str]] = field(default_factory=list)  # (key, smallest|largest): the chosen point's ends
    schedule: str = ""  # the LR schedule of the reported runs in words ("" when the records do not say)
    train: list[float] = field(default_factory=list)  # final-epoch running train top-1 of the reported runs
    bn_lag: list[float] = field(default_factory=list)  # final_test_top1 − final_test_top1_rawbn per reported run

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


def edges(row: Row, column: Any, point: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, "smallest" | "largest")`` for every continuous dimension (:meth:`Row.continuous`) in which ``point``
    holds the smallest or largest value among the row's points at ``column`` (dimensions with at least
    :data:`MIN_EDGE_VALUES` distinct values): its optimum may lie outside the range searched."""
    points = row.points(column)
    found = []
    for key in row.continuous(column):
        values = [float(p[key]) for p in points]
        if len(set(values)) < MIN_EDGE_VALUES:
            continue
        chosen = float(point[key])
        end = "smallest" if chosen == min(values) else "largest" if chosen == max(values) else None
        if end:
            found.append((key, end))
    return found


def edge_marks(cell: Any) -> str:
    """``◂`` and/or ``▸`` for a cell whose chosen point sits at an end of a searched range (:func:`edges`)."""
    return "".join(EDGE_MARKS[end] for end in EDGE_MARKS if any(e == end for _, e in cell.edges))


def edge_legend(spec: Spec, cells: dict[tuple[str, Any], Any]) -> list[str]:
    """The legend of the ◂/▸ marks naming each marked cell's key and end, or nothing when no cell is marked."""
    marked = []
    for cell in cells.values():
        if cell.edges:
            ends = ", ".join(f"{key} {end}" for key, end in cell.edges)
            marked.append(f"{cell.row} @ {column_header(spec, cell.column)}: {ends}")
    if not marked:
        return []
    return [f"{EDGE_MARKS['smallest']} / {EDGE_MARKS['largest']}: the chosen point has the smallest / largest value of "
            f"a continuous dimension among its cell's trials (at least {MIN_EDGE_VALUES} distinct values), so the "
            f"range was too narrow to show an optimum: {'; '.join(marked)}.", ""]


def schedule_column(spec: Spec, cells: dict[tuple[str, Any], Any]) -> tuple[dict[str, str], list[str]]:
    """Each row's LR schedule for the main table (the reported runs' text, ``–`` when unknown), and a section giving
    the schedule per cell for the rows whose cells differ (e.g. a searched warm-up length)."""
    per_cell = {row.label: [cells[(row.label, c)].schedule for c in spec.columns] for row in spec.rows}
    varying = [label for label, texts in per_cell.items() if len({t for t in texts if t}) > 1]
    column = {label: "per column (below)" if label in varying else next((t for t in texts if t), "–")
              for label, texts in per_cell.items()}
    if not varying:
        return column, []
    rows = [[label, *(text or "–" for text in per_cell[label])] for label in varying]
    return column, ["## LR schedule per cell", "",
                    md_table(["Method", *(column_header(spec, c) for c in spec.columns)], rows), ""]


def _finite(values: list[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]


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
    first = used[0].run
    cell = Cell(row.label, column, "ok", statistics.fmean(values), std, len(values), point=point, diverged=diverged,
                runs=[r.run_dir for r in used], values=values,
                chance=_chance(spec, list(found.records.values()), where), edges=edges(row, column, point),
                schedule=describe_schedule(first.config, first.lr, first.steps_per_epoch),
                train=_finite([r.run.final_train_top1 for r in used]),
                bn_lag=_finite([r.run.final_test_top1 - r.run.final_test_top1_rawbn for r in used]), **base)
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


def significant_best(spec: Spec, cells: dict[tuple[str, Any], Cell]) -> tuple[set[tuple[str, Any]], int]:
    """Per column, the best cell if it beats the runner-up beyond seed noise and is above chance level: Welch's test
    of the two, Holm-adjusted over the columns where such a test can be made (one family). Returns the bold cells and
    the number of tests; columns with fewer than two numbers, or a test that cannot be made, have none."""
    tests: list[tuple[Cell, Difference]] = []
    for column in spec.columns:
        ranked = sorted((cells[(r.label, column)] for r in spec.rows if cells[(r.label, column)].status == "ok"),
                        key=lambda c: -c.mean)
        if len(ranked) < 2 or ranked[0].at_chance:
            continue
        difference, _ = welch(ranked[0].values, ranked[1].values)
        if difference is not None:
            tests.append((ranked[0], difference))
    adjust([difference for _, difference in tests])
    bold = {(best.row, best.column) for best, difference in tests if difference.significant and difference.diff > 0}
    return bold, len(tests)


def _budget_text(spec: Spec) -> str:
    """How many runs each cell had (equal for every row: the spec loader refuses unequal budgets)."""
    row = spec.rows[0]
    kind = "search trial(s)" if row.trials is not None else "grid point(s)"
    text = f"Budget: every row had {spec.budget(row)} {kind} × {len(spec.seeds)} seed(s)"
    extra = len(set(spec.confirm_seeds) - set(spec.seeds))
    if spec.confirm_seeds:
        text += f", then the chosen point re-run with seeds {', '.join(map(str, spec.confirm_seeds))} ({extra} new)"
    return text + f" = {spec.runs_per_cell(row)} runs per cell."


def seeds_text(seeds: list[int]) -> str:
    """``seed 0`` or ``seeds 1, 2, 3``."""
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def protocol_text(spec: Spec, chosen_by: str, reported: str) -> str:
    """``chosen on validation (<chosen_by>, search seed 0), reported on <reported> over confirmation seeds 1, 2``."""
    over = (f"confirmation {seeds_text(spec.confirm_seeds)}" if spec.confirm_seeds
            else f"the same {seeds_text(spec.seeds)} (no confirmation runs)")
    chosen = f"{chosen_by.removesuffix(' (%)')}, search {seeds_text(spec.seeds)}"
    return f"chosen on {SPLIT_TEXT[spec.select_on]} ({chosen}), reported on {reported} over {over}"


def protocol_warnings(spec: Spec) -> list[str]:
    """What the spec's protocol costs the reader: a point chosen on the test set it reports (``select_on: test``),
    and confirmation runs that are the search's own (``reuse_search_seeds``)."""
    lines = []
    if spec.select_on == "test":
        lines += ["**Warning: each cell's point was chosen on the test set that the cell reports (`select_on: test`), "
                  "so the cells are optimistic: the selection's luck on the test set counts as accuracy. Tables chosen "
                  "on a validation split do not have this bias.**", ""]
    reused = sorted(set(spec.seeds) & set(spec.confirm_seeds))
    if reused:
        lines += [f"The confirmation includes the search {seeds_text(reused)} (`reuse_search_seeds: true`): those runs "
                  "both chose the point and are reported.", ""]
    return lines


def _selection_rule(spec: Spec) -> str:
    text = (f"Selection rule: {protocol_text(spec, METRIC_TEXT[spec.selection_metric], 'test')}. For every row and "
            f"column, each point's {METRIC_TEXT[spec.selection_metric]} is averaged over the search seeds (completed "
            "runs only); the point with the best mean is chosen (points where a seed diverged rank after all others; "
            f"ties go to the first point in trial order), and the cell shows its {METRIC_TEXT[spec.metric]}: ")
    text += ("the confirmation runs' mean ± sample standard deviation (not the search seeds')." if spec.confirm_seeds
             else "mean ± sample standard deviation over the seeds.")
    return text + (" `div`: every run of the cell diverged. `failed`: runs failed and none completed. `–`: no usable "
                   "run. `(n=k/m)`: only k of the m seeds completed. †: a seed diverged at the chosen point. "
                   "‡: some runs of the cell failed (see Problems).")


def _statistics_rule(spec: Spec, tests: int) -> str:
    text = (f"Bold: the column's best mean, only where it beats the runner-up beyond seed noise: Welch's t-test over "
            f"the seeds of the two cells (two-sided), Holm–Bonferroni-adjusted over this table's {tests} such test(s) "
            f"(one per column where a test can be made), adjusted p < {ALPHA:g}, and above chance level.")
    if len(spec.reported_seeds) < 2:
        text += " **Nothing is bold in this table: with one seed per cell there is no estimate of seed noise.**"
    return text + (f" `(chance)`: the mean is within {CHANCE_MARGIN:g} points of chance level (100 / number of "
                   "classes, from each run's summary, else the spec's `chance`); such cells never count in the "
                   "claim section.")


def _spread_table(spec: Spec, cells: dict[tuple[str, Any], Cell], title: str, text: str,
                  values: Callable[[Cell], list[float]], spread: bool) -> list[str]:
    """A sub-table of one per-run quantity of the reported runs (mean, ± sample std if ``spread``), when some cell
    has it (records made before the field existed have none)."""
    if not any(values(c) for c in cells.values()):
        return []

    def show(cell: Cell) -> str:
        got = values(cell)
        if not got:
            return "–"
        mean = f"{statistics.fmean(got):.2f}"
        return f"{mean} ± {statistics.stdev(got):.2f}" if spread and len(got) > 1 else mean

    rows = [[r.label, *(show(cells[(r.label, c)]) for c in spec.columns)] for r in spec.rows]
    return [f"## {title}", "", text, "", md_table(["Method", *(column_header(spec, c) for c in spec.columns)], rows),
            ""]


def _sub_tables(spec: Spec, cells: dict[tuple[str, Any], Cell]) -> list[str]:
    """Train top-1 and the BatchNorm lag of the reported runs, from the summary fields that newer records have."""
    return [*_spread_table(spec, cells, "Train top-1 of the reported runs", "The final epoch's running train top-1 "
                           "(%, over that epoch's augmented batches, BatchNorm in training mode), mean ± sample std "
                           "over the reported seeds: a low train top-1 is an optimization gap (the optimizer did not "
                           "fit the training set), a high one above a low test top-1 a generalization gap.",
                           lambda c: c.train, spread=True),
            *_spread_table(spec, cells, "BatchNorm lag", "Final test top-1 with the recalibrated (precise-BN) "
                           "statistics minus with the raw running statistics, in points, mean over the reported seeds: "
                           "how much the running statistics, averaged over a network that kept changing, trail the "
                           "final weights.", lambda c: c.bn_lag, spread=False)]


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
    return _cell_text(cell, bold) + edge_marks(cell)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (pipes in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


_Tests = dict[tuple[str, str, Any], tuple[Difference | None, str]]  # (row a, row b, column) -> Welch's test


@dataclass
class _Pair:
    """One comparison of the claim section: cell ``a`` against cell ``b`` (``a − b``), with its tests when seed noise
    can be estimated: Welch's difference and, for a claim with a margin, the equivalence test."""

    a: Cell
    b: Cell
    difference: Difference | None
    reason: str  # why no test, when difference is None
    equivalence: Equivalence | None = None

    @classmethod
    def of(cls, a: Cell, b: Cell, tests: _Tests, margin: float | None = None) -> _Pair:
        """The pair's tests; the same two cells compared twice (a baseline that is both the best no-warm-up and the
        best overall, a named claim repeating a comparison) share one Welch test in ``tests``."""
        key = (a.row, b.row, a.column)
        if key not in tests:
            tests[key] = welch(a.values, b.values)
        difference, reason = tests[key]
        equivalence = tost(a.values, b.values, margin) if difference is not None and margin is not None else None
        return cls(a, b, difference, reason, equivalence)

    def text(self) -> str:
        if self.difference is None:
            return f"{self.a.mean - self.b.mean:+.2f} points ({self.reason}; no test)"
        return self.difference.text() + (f"; {self.equivalence.text()}" if self.equivalence else "")


@dataclass
class _Tally:
    """The method against one kind of baseline over the columns."""

    wins: int = 0  # columns where the method is significantly better
    losses: int = 0  # significantly worse
    compared: int = 0  # columns where both have a number above chance
    untestable: int = 0  # of those, columns where no test could be made (one seed, no spread)
    beaten_only: int = 0  # columns where every such baseline diverged, failed or sat at chance while the method trained

    def add(self, pair: _Pair) -> None:
        self.compared += 1
        if pair.difference is None:
            self.untestable += 1
            return
        self.wins += pair.difference.significant and pair.difference.diff > 0
        self.losses += pair.difference.significant and pair.difference.diff < 0

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


def _comparable(cell: Cell) -> bool:
    return cell.status == "ok" and not cell.at_chance


def _not_compared(name: str, cell: Cell) -> str | None:
    """Why ``cell`` (of row ``name``) is kept out of the claim section, or ``None``."""
    if cell.status != "ok":
        return f"{name} has no number ({_md_cell(cell, False)})"
    if cell.at_chance:
        return f"{name} {_cell_text(cell)} is within {CHANCE_MARGIN:g} points of chance level ({cell.chance:.1f} %)"
    return None


def _baseline_kinds(spec: Spec) -> list[tuple[str, tuple[str, ...]]]:
    compare = spec.compare
    if compare is None:
        return []
    return ([("no-warm-up baseline", compare.no_warmup)] if compare.no_warmup else []) + \
        [("baseline overall", compare.baselines)]


def _compare_pairs(spec: Spec, cells: dict[tuple[str, Any], Cell], tests: _Tests) -> dict[tuple[str, Any, str], _Pair]:
    """(method, column, kind) -> the method's cell against the best above-chance baseline of that kind."""
    pairs = {}
    for method in spec.compare.method if spec.compare else ():
        for column in spec.columns:
            mine = cells[(method, column)]
            for kind, group in _baseline_kinds(spec) if _comparable(mine) else ():
                others = [c for b in group if _comparable(c := cells[(b, column)])]
                if others:
                    pairs[(method, column, kind)] = _Pair.of(mine, max(others, key=lambda c: c.mean), tests)
    return pairs


def _claim_pairs(spec: Spec, cells: dict[tuple[str, Any], Cell], tests: _Tests) -> dict[tuple[int, Any], _Pair]:
    """(claim index, column) -> ``a`` against ``b`` where both have a number above chance level."""
    return {(i, column): _Pair.of(cells[(claim.a, column)], cells[(claim.b, column)], tests, claim.margin)
            for i, claim in enumerate(spec.claims) for column in spec.columns
            if _comparable(cells[(claim.a, column)]) and _comparable(cells[(claim.b, column)])}


def _family(compare: list[_Pair], claims: list[_Pair]) -> tuple[list[Difference | Equivalence], str]:
    """The claim section's Holm family (each Welch test once, then the equivalence tests) and how many of which
    kind it holds."""
    differences = {id(p.difference): p.difference for p in compare if p.difference is not None}
    named = {id(p.difference): p.difference for p in claims if p.difference is not None
             and id(p.difference) not in differences}
    equivalences = [p.equivalence for p in claims if p.equivalence is not None]
    counts = [(len(differences), "method-vs-baseline difference(s)"), (len(named), "further named-claim "
              "difference(s)"), (len(equivalences), "equivalence test(s)")]
    family = [*differences.values(), *named.values(), *equivalences]
    parts = ", ".join(f"{n} {what}" for n, what in counts if n)
    return family, (f"Multiple tests: this section's {len(family)} test(s){f' ({parts})' if parts else ''} are one "
                    "family (two cells compared twice are one test); each p-value is printed with its "
                    "Holm–Bonferroni-adjusted value (Holm p), and \"significant\" and \"equivalent\" mean a Holm "
                    f"p < {ALPHA:g}.")


def _compare_lines(spec: Spec, cells: dict[tuple[str, Any], Cell],
                   pairs: dict[tuple[str, Any, str], _Pair]) -> list[str]:
    """Per column, each method row against the best baseline of each kind, then the tallies."""
    kinds = _baseline_kinds(spec)
    lines = [f"Each method row against the best {' and the best '.join(k for k, _ in kinds)} (by mean, above "
             "chance level) per column: difference in points, Welch's 95 % interval and two-sided p-value.", ""]
    for method in spec.compare.method:
        tallies = {kind: _Tally() for kind, _ in kinds}
        for column in spec.columns:
            mine, head = cells[(method, column)], column_header(spec, column)
            why = _not_compared(method, mine)
            if why:
                lines.append(f"- {head}: {why}; not compared.")
                continue
            parts = []
            for kind, group in kinds:
                pair = pairs.get((method, column, kind))
                if pair is not None:
                    tallies[kind].add(pair)
                    parts.append(f"vs the best {kind} {pair.b.row} {_cell_text(pair.b)}: {pair.text()}")
                elif group and all(cells[(b, column)].status in ("diverged", "failed") or cells[(b, column)].at_chance
                                   for b in group):
                    tallies[kind].beaten_only += 1
                    parts.append(f"vs the best {kind}: every such row diverged, failed or is at chance level")
                else:
                    parts.append(f"vs the best {kind}: no row has a number")
            lines.append(f"- {head}: {method} {_cell_text(mine)} " + "; ".join(parts) + ".")
        lines.append("")
        for kind, _ in kinds:
            lines += [tallies[kind].text(method, kind, len(spec.columns)), ""]
    return lines


def _claim_lines(spec: Spec, cells: dict[tuple[str, Any], Cell], claim: Claim, pairs: dict[Any, _Pair]) -> list[str]:
    """One named claim: its question, then a − b per column (and the equivalence verdict with a margin)."""
    margin = f" (equivalence margin ±{claim.margin:g} points)" if claim.margin is not None else ""
    lines = [f"**{claim.a} vs {claim.b}: {claim.question}**{margin}", ""]
    for column in spec.columns:
        head = column_header(spec, column)
        pair = pairs.get(column)
        if pair is None:
            why = "; ".join(w for name in (claim.a, claim.b) if (w := _not_compared(name, cells[(name, column)])))
            lines.append(f"- {head}: {why}; not compared.")
            continue
        lines.append(f"- {head}: {claim.a} {_cell_text(pair.a)} − {claim.b} {_cell_text(pair.b)}: {pair.text()}.")
    return [*lines, ""]


def _claim(spec: Spec, cells: dict[tuple[str, Any], Cell]) -> list[str]:
    """The paper's claim; per column each method row against the best no-warm-up baseline and the best baseline
    (the spec's ``compare``); the spec's named ``claims``. All their tests are one Holm family."""
    lines = ["## Paper's claim vs our numbers", "", f"> {spec.claim or '(the spec states no claim)'}", ""]
    if spec.compare is None and not spec.claims:
        return [*lines, "The spec declares no `compare:` rows (method and baselines) and no `claims:`, so no "
                        "comparison is made."]
    tests: _Tests = {}
    compare, claims = _compare_pairs(spec, cells, tests), _claim_pairs(spec, cells, tests)
    family, text = _family(list(compare.values()), list(claims.values()))
    adjust(family)
    lines += [text, ""]
    lines += _compare_lines(spec, cells, compare) if spec.compare else \
        ["The spec declares no `compare:` rows (method and baselines); only its named claims are tested.", ""]
    if spec.claims:
        lines += ["### Named claims", "",
                  "Each claim's a − b per column: difference in points, Welch's 95 % interval and two-sided p-value; "
                  "with a margin, also the equivalence test (TOST: two one-sided Welch tests at "
                  f"α = {ALPHA:g}, i.e. the 90 % interval inside ± margin). \"Not significant\" is no evidence of a "
                  "difference and \"not shown equivalent\" no evidence of equivalence: seed noise is neither a win "
                  "nor a tie.", ""]
        for i, claim in enumerate(spec.claims):
            lines += _claim_lines(spec, cells, claim, {c: p for (j, c), p in claims.items() if j == i})
    if _SMALL_SCALE.search(spec.display_title):
        lines.append(f"This is a small-scale run ({spec.display_title}): it tests the direction of the claim at "
                     "reduced scale and does not reproduce the paper's absolute numbers.")
    return lines


def _markdown(spec: Spec, cells: dict[tuple[str, Any], Cell], bold: set[tuple[str, Any]], tests: int,
              problems: list[str]) -> str:
    headers = [column_header(spec, c) for c in spec.columns]
    schedules, per_cell = schedule_column(spec, cells)
    main = [[r.label, schedules[r.label], str(spec.runs_per_cell(r)),
             *(_md_cell(cells[(r.label, c)], (r.label, c) in bold) for c in spec.columns)] for r in spec.rows]
    points = [[r.label, *(format_point(cells[(r.label, c)].point) or "–" for c in spec.columns)] for r in spec.rows]
    seeds = spec.reported_seeds
    over = f"mean ± std over {len(seeds)} seed(s)" + (" (confirmation runs of the chosen point)"
                                                       if spec.confirm_seeds else "")
    lines = [f"# {spec.display_title}", "", f"Table `{spec.name}`: {METRIC_TEXT[spec.metric]}, {over}.", "",
             *protocol_warnings(spec), md_table(["Method", "LR schedule", "Budget (runs/cell)", *headers], main), "",
             *edge_legend(spec, cells), _statistics_rule(spec, tests), "", _budget_text(spec), "",
             _selection_rule(spec), ""]
    if spec.notes:
        lines += [f"Notes: {spec.notes.strip()}", ""]
    lines += per_cell
    if any(r.grid or r.trials is not None for r in spec.rows):
        lines += ["## Selected point per cell", "", md_table(["Method", *headers], points), ""]
    lines += [*_sub_tables(spec, cells), *_claim(spec, cells), ""]
    done = "None: every expected run finished (completed or diverged)."
    lines += ["## Problems", ""] + ([f"- {p}" for p in problems] or [done])
    return "\n".join(lines).rstrip() + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--",
                "±": r"$\pm$", "†": r"$^\dagger$", "×": r"$\times$", "◂": r"$^\triangleleft$",
                "▸": r"$^\triangleright$"}


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
    text += tex_escape(edge_marks(cell))
    point = format_point(cell.point)
    return text + (f" {{\\scriptsize ({tex_escape(point)})}}" if point else "")


def _latex(spec: Spec, cells: dict[tuple[str, Any], Cell], bold: set[tuple[str, Any]]) -> str:
    head = " & ".join(["Method", "Budget", *(tex_escape(column_header(spec, c)) for c in spec.columns)])
    body = [" & ".join([tex_escape(r.label), str(spec.runs_per_cell(r)),
                        *(_tex_cell(cells[(r.label, c)], (r.label, c) in bold) for c in spec.columns)]) + r" \\"
            for r in spec.rows]
    single = " (one seed: nothing is bold)" if len(spec.reported_seeds) < 2 else ""
    chosen = tex_escape(protocol_text(spec, METRIC_TEXT[spec.selection_metric], "test"))
    optimistic = " (optimistic: chosen on the test set it reports)" if spec.select_on == "test" else ""
    caption = (f"{tex_escape(spec.display_title)}. {tex_escape(METRIC_TEXT[spec.metric])}: mean $\\pm$ sample std "
               f"over {len(spec.reported_seeds)} seed(s) at the point (small text) {chosen}{optimistic}; budget = "
               f"runs per cell; bold: best of the column and better than the runner-up by Welch's t-test, "
               f"Holm-adjusted over the columns, p $<$ {ALPHA:g}{single}; $^{{c}}$: within {CHANCE_MARGIN:g} points of "
               "chance level; $^{(k/m)}$: only k of m seeds completed; $^\\dagger$: a seed diverged at the chosen "
               "point; $^\\ddagger$: runs failed; $^\\triangleleft$ / $^\\triangleright$: the chosen point is the "
               "smallest / largest of its trials in a searched range; div: every run diverged; --: no run.")
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
    bold, tests = significant_best(spec, cells)
    return Table(spec, cells, _markdown(spec, cells, bold, tests, problems), _latex(spec, cells, bold),
                 _csv(spec, cells), problems, bold)


def status_summary(spec: Spec, df: pd.DataFrame) -> str:
    """One line: runs of this table by status, corrupt records, and runs of other tables ignored."""
    mine = df[df["table"] == spec.name]
    counts = ", ".join(f"{n} {status}" for status, n in mine["status"].value_counts().items()) or "none"
    expected = sum(spec.runs_per_cell(r) for r in spec.rows) * len(spec.columns)
    corrupt = int((df["status"] == "corrupt").sum())
    other = len(df) - len(mine) - corrupt
    return (f"{len(mine)} run(s) of table {spec.name} (expected {expected}): {counts}; {corrupt} unreadable "
            f"summary.json; {other} run(s) of other tables or unlabelled ignored")
