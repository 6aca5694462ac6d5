"""How every kind of table finds each cell's runs among the collected records: one record per (point, seed) of the
spec (the most finished one when a point and seed ran twice), the problems met on the way (runs outside the spec,
duplicates, failures, missing runs), and the cells of a table from a kind's selection of one cell.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tvlars.records import Status
from tvlars.tables.collect import normalize, point_key
from tvlars.tables.design import Row, Spec
from tvlars.tables.render import column_header, format_point

# Preference among several records of the same (point, seed): the most finished one counts. ``unreached``
# (completed without reaching the target) exists in scaling tables only.
_RANK = {"usable": 0, "unreached": 1, "diverged": 2, "running": 3, "failed": 4}
FINISHED = ("usable", "unreached", "diverged")  # record states that a sweep never reruns


def run_state(status: Any, value: float) -> str:
    """A run's place in selection: usable, diverged, running (also interrupted: it resumes) or failed."""
    if status == Status.completed:
        return "usable" if math.isfinite(value) else "diverged"
    if status in (Status.running, Status.interrupted):
        return "running"
    return str(status) if status in (Status.diverged, Status.failed) else "failed"


def in_columns(runs: pd.DataFrame, columns: list[Any]) -> pd.Series:
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


def _unplaced(spec: Spec, runs: pd.DataFrame) -> list[str]:
    """Runs of this table whose row or column is not in the spec."""
    labels = {r.label for r in spec.rows}
    problems = [f"{n} run(s) with row label {label!r}, not a row of the spec (ignored)"
                for label, n in runs.loc[~runs["row"].isin(labels), "row"].astype(str).value_counts().items()]
    stray = runs[runs["row"].isin(labels) & ~in_columns(runs, spec.columns)]
    problems += [f"{n} run(s) at column {column!r}, not a column of the spec (ignored)"
                 for column, n in stray["column"].astype(str).value_counts().items()]
    return problems


CellSelector = Callable[[Spec, Row, Any, pd.DataFrame], tuple[Any, list[str]]]
"""A kind's selection of one cell: ``(spec, row, column, the cell's runs)`` → the cell and its problems."""


def select_cells(spec: Spec, df: pd.DataFrame, cell: CellSelector) -> tuple[dict[tuple[str, Any], Any], list[str]]:
    """Every cell of the table, by row label and column, and the problems found (missing, running, failed, corrupt,
    stray runs); ``cell`` selects each one from its runs."""
    runs = df[df["table"] == spec.name]
    corrupt = df[df["status"] == "corrupt"]
    problems = [f"unreadable summary.json ({problem}; the run cannot be placed in a cell): {path}"
                for path, problem in zip(corrupt["path"], corrupt["problem"], strict=True)]
    problems += _unplaced(spec, runs)
    cells = {}
    for row in spec.rows:
        mine = runs[runs["row"] == row.label]
        for column in spec.columns:
            cells[(row.label, column)], found = cell(spec, row, column, mine[in_columns(mine, [column])])
            problems += found
    return cells, problems
