"""Collected runs + an experiment spec → the paper-style table (Markdown, LaTeX, CSV) and its problems.

Selection per row × column: each grid point's metric is averaged over its completed seeds; the point with
the best mean wins (points where a seed diverged rank after every point where none did; ties → first in
grid order). The cell shows that mean ± sample std over seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tvlars.experiments import Row, Spec, slug
from tvlars.report.collect import normalize, point_key

METRIC_TEXT = {"best_test_top1": "best-epoch test top-1 (%)", "final_test_top1": "final-epoch test top-1 (%)"}
_NO_WARMUP = re.compile(r"no[ -]?warm-?up", re.IGNORECASE)
_SMALL_SCALE = re.compile(r"mini|smoke", re.IGNORECASE)
# Preference among several records of the same (point, seed): the most finished one counts.
_RANK = {"usable": 0, "diverged": 1, "running": 2, "failed": 3}


@dataclass
class Cell:
    """The selected result of one row × column."""

    row: str
    column: Any
    status: str  # ok | diverged (every run diverged) | missing (no usable run)
    mean: float = math.nan
    std: float = math.nan  # sample std over seeds; NaN with one seed
    n: int = 0  # seeds averaged at the chosen point
    expected: int = 0  # seeds the spec asks for
    point: dict[str, Any] | None = None  # the chosen grid point
    diverged: int = 0  # seeds that diverged at the chosen point
    runs: list[str] = field(default_factory=list)  # run directories averaged at the chosen point


@dataclass
class Table:
    """The rendered table, the selection behind it, and what was missing or broken."""

    spec: Spec
    cells: dict[tuple[str, Any], Cell]  # (row label, column value) -> cell
    markdown: str
    latex: str
    csv: str
    problems: list[str]


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
    if status == "completed":
        return "usable" if math.isfinite(value) else "diverged"
    return status if status in ("diverged", "running", "failed") else "failed"


def _in_columns(runs: pd.DataFrame, columns: list[Any]) -> pd.Series:
    """Which runs sit in one of ``columns`` (compared after :func:`normalize`)."""
    targets = [normalize(c) for c in columns]
    return runs["column"].map(lambda c: normalize(c) in targets).astype(bool)


def _cell(spec: Spec, row: Row, column: Any, runs: pd.DataFrame) -> tuple[Cell, list[str]]:
    """Select the grid point of one cell; returns the cell and its problems."""
    points = row.points(column)
    keys = [point_key(p) for p in points]
    seeds = [int(s) for s in spec.seeds]
    where = f"{row.label} @ {column_header(spec, column)}"
    problems: list[str] = []
    best: dict[tuple[str, int], tuple[str, float, str]] = {}  # (point, seed) -> (state, value, run_dir)
    duplicates = outside = 0
    for run in runs.itertuples(index=False):
        if run.point not in keys or run.seed not in seeds:
            outside += 1
            continue
        value = float(getattr(run, spec.metric))
        record = (_state(run.status, value), value, run.run_dir)
        slot = (run.point, run.seed)
        if slot in best:
            duplicates += 1
            if _RANK[record[0]] >= _RANK[best[slot][0]]:
                continue
        best[slot] = record
    if outside:
        problems.append(f"{where}: {outside} run(s) at grid points or seeds not in the spec (ignored)")
    if duplicates:
        problems.append(f"{where}: {duplicates} duplicate run(s) of the same grid point and seed "
                        "(the most finished one counted)")

    expected = len(keys) * len(seeds)
    missing = [f"{format_point(p)} seed {s}".lstrip() for p, k in zip(points, keys, strict=True)
               for s in seeds if (k, s) not in best]
    counts = Counter(state for state, _, _ in best.values())
    issues = [f"{n} {state}" for state in ("running", "failed") if (n := counts[state])]
    if missing:
        shown = "; ".join(missing[:4]) + (f"; … {len(missing) - 4} more" if len(missing) > 4 else "")
        issues.insert(0, f"{len(missing)} missing ({shown})")
    if issues:
        finished = counts["usable"] + counts["diverged"]
        problems.append(f"{where}: {finished} of {expected} runs finished ({len(keys)} grid point(s) × "
                        f"{len(seeds)} seed(s)); " + ", ".join(issues))

    candidates = []
    for index, (point, key) in enumerate(zip(points, keys, strict=True)):
        records = [best[(key, s)] for s in seeds if (key, s) in best]
        values = [v for state, v, _ in records if state == "usable"]
        if values:
            diverged = sum(state == "diverged" for state, _, _ in records)
            runs_used = [d for state, _, d in records if state == "usable"]
            candidates.append((diverged > 0, -statistics.fmean(values), index, point, values, diverged, runs_used))
    if not candidates:
        status = "diverged" if counts["diverged"] else "missing"
        return Cell(row.label, column, status, expected=len(seeds)), problems
    _, neg_mean, _, point, values, diverged, runs_used = min(candidates, key=lambda c: c[:3])
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    if diverged:
        problems.append(f"{where}: the chosen point ({format_point(point)}) had {diverged} diverged seed(s); "
                        "its mean is over the completed seeds only (marked †)")
    return Cell(row.label, column, "ok", -neg_mean, std, len(values), len(seeds), point, diverged,
                runs_used), problems


def _unplaced(spec: Spec, runs: pd.DataFrame) -> list[str]:
    """Runs of this table whose row or column is not in the spec."""
    labels = {r.label for r in spec.rows}
    problems = [f"{n} run(s) with row label {label!r}, not a row of the spec (ignored)"
                for label, n in runs.loc[~runs["row"].isin(labels), "row"].astype(str).value_counts().items()]
    stray = runs[runs["row"].isin(labels) & ~_in_columns(runs, spec.columns)]
    problems += [f"{n} run(s) at column {column!r}, not a column of the spec (ignored)"
                 for column, n in stray["column"].astype(str).value_counts().items()]
    return problems


def select(spec: Spec, df: pd.DataFrame) -> tuple[dict[tuple[str, Any], Cell], list[str]]:
    """Every cell of the table and the problems found (missing, running, failed, corrupt, stray runs)."""
    runs = df[df["table"] == spec.name]
    corrupt = df.loc[df["status"] == "corrupt", "path"].tolist()
    problems = [f"unreadable summary.json (cannot be placed in a cell): {p}" for p in corrupt]
    problems += _unplaced(spec, runs)
    cells = {}
    for row in spec.rows:
        mine = runs[runs["row"] == row.label]
        for column in spec.columns:
            cell, found = _cell(spec, row, column, mine[_in_columns(mine, [column])])
            cells[(row.label, column)] = cell
            problems += found
    return cells, problems


def _best_per_column(spec: Spec, cells: dict[tuple[str, Any], Cell]) -> dict[Any, float]:
    best = {}
    for column in spec.columns:
        means = [cells[(r.label, column)].mean for r in spec.rows if cells[(r.label, column)].status == "ok"]
        best[column] = max(means) if means else math.nan
    return best


def _budgets(spec: Spec) -> tuple[dict[str, int], str]:
    """Runs per cell of each row, and a sentence saying whether they are equal."""
    seeds = len(spec.seeds)
    budgets = {r.label: spec.budget(r) * seeds for r in spec.rows}
    if len(set(budgets.values())) == 1:
        points = spec.budget(spec.rows[0])
        return budgets, (f"Budgets are equal: every row had {points} grid point(s) × {seeds} seed(s) "
                         f"= {next(iter(budgets.values()))} runs per cell.")
    listing = ", ".join(f"{label} {n}" for label, n in budgets.items())
    return budgets, (f"Budgets differ ({listing} runs per cell): a row with a larger grid was tuned more, "
                     "which favours it.")


def _selection_rule(spec: Spec) -> str:
    return (f"Selection rule: for every row and column, each grid point's {METRIC_TEXT[spec.metric]} is "
            f"averaged over seeds ({', '.join(map(str, spec.seeds))}; completed runs only); the grid point with the "
            "best mean is chosen (points where a seed diverged rank after all others; ties go to the first point "
            "in grid order), and the cell shows that mean ± the sample standard deviation over seeds. "
            "Bold: best mean of the column. `div`: every run of the cell diverged. `–`: no usable run. "
            "`(n=k/m)`: only k of the m seeds completed. †: a seed diverged at the chosen point.")


# --------------------------------------------------------------------------------------------- renderers
def _cell_text(cell: Cell, bold: bool = False) -> str:
    """``mean ± std`` with its marks: ``(n=k/m)`` when seeds are missing, ``†`` when a seed diverged."""
    text = f"**{_mean_std(cell)}**" if bold else _mean_std(cell)
    if cell.n < cell.expected:
        text += f" (n={cell.n}/{cell.expected})"
    return text + ("†" if cell.diverged else "")


def _md_cell(cell: Cell, best: float) -> str:
    if cell.status != "ok":
        return "div" if cell.status == "diverged" else "–"
    return _cell_text(cell, bold=cell.mean == best)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class _Tally:
    """TVLARS vs one kind of baseline over the columns."""

    diffs: list[tuple[float, bool | None]] = field(default_factory=list)  # (difference, > larger std? None: 1 seed)
    all_diverged: int = 0  # columns where TVLARS has a number and every such baseline diverged

    def text(self, method: str, kind: str, columns: int) -> str:
        wins = [d for d, _ in self.diffs if d > 0]
        clear = sum(1 for d, c in self.diffs if d > 0 and c)
        spread = "single seed: no spread estimate" if all(c is None for _, c in self.diffs) else \
            f"{clear} by more than the larger std"
        text = f"beats the best {kind} in {len(wins)} of {len(self.diffs)} columns"
        if len(self.diffs) < columns:
            text += f" with numbers for both (of {columns})"
        if wins:
            text += f", by up to {max(wins):.2f} points ({spread})"
        if self.all_diverged:
            text += f"; in {self.all_diverged} column(s) every {kind} diverged while {method} trained"
        return text


def _versus(mine: Cell, others: list[Cell], what: str, tally: _Tally) -> str:
    """One comparison of a TVLARS cell with the best of ``others``; records it in ``tally``."""
    ok = [c for c in others if c.status == "ok"]
    if not ok:
        if others and all(c.status == "diverged" for c in others):
            tally.all_diverged += 1
            return f"vs {what}: every such row diverged"
        return f"vs {what}: no row has a number"
    other = max(ok, key=lambda c: c.mean)
    diff, spread = mine.mean - other.mean, max(mine.std, other.std)
    if math.isnan(spread):
        verdict, clear = "single seed: no spread estimate", None
    else:
        clear = abs(diff) > spread
        verdict = f"{'exceeds' if clear else 'within'} the larger std, {spread:.2f}"
    tally.diffs.append((diff, clear))
    return f"vs {what} {other.row} {_cell_text(other)}: {diff:+.2f} points ({verdict})"


def _claim(spec: Spec, cells: dict[tuple[str, Any], Cell]) -> list[str]:
    """The paper's claim, then per column each TVLARS row vs the best no-warm-up baseline and the best baseline."""
    lines = ["## Paper's claim vs our numbers", "", f"> {spec.claim or '(the spec states no claim)'}", ""]
    methods = [r.label for r in spec.rows if r.label.upper().startswith("TVLARS")]
    if not methods:
        return lines
    baselines = [r.label for r in spec.rows if r.label not in methods]
    no_warmup = [label for label in baselines if _NO_WARMUP.search(label)]
    for method in methods:
        versus_no_warmup, versus_all = _Tally(), _Tally()
        for column in spec.columns:
            mine, head = cells[(method, column)], column_header(spec, column)
            if mine.status != "ok":
                lines.append(f"- {head}: {method} has no number ({_md_cell(mine, math.nan)}); not compared.")
                continue
            parts = [_versus(mine, [cells[(b, column)] for b in no_warmup], "the best no-warm-up baseline",
                             versus_no_warmup)] if no_warmup else []
            parts.append(_versus(mine, [cells[(b, column)] for b in baselines], "the best baseline overall",
                                 versus_all))
            lines.append(f"- {head}: {method} {_cell_text(mine)} " + "; ".join(parts) + ".")
        n = len(spec.columns)
        first = (versus_no_warmup.text(method, "no-warm-up baseline", n) if no_warmup
                 else "(the table has no no-warm-up baseline row)")
        lines += ["", f"{method} {first}; {versus_all.text(method, 'baseline overall', n)}.", ""]
    if _SMALL_SCALE.search(spec.title):
        lines.append(f"This is a small-scale run ({spec.title}): it tests the direction of the claim at reduced "
                     "scale and does not reproduce the paper's absolute numbers.")
    return lines


def _markdown(spec: Spec, cells: dict[tuple[str, Any], Cell], problems: list[str]) -> str:
    best = _best_per_column(spec, cells)
    budgets, budget_text = _budgets(spec)
    headers = [column_header(spec, c) for c in spec.columns]
    main = [[r.label, str(budgets[r.label]), *(_md_cell(cells[(r.label, c)], best[c]) for c in spec.columns)]
            for r in spec.rows]
    points = [[r.label, *(format_point(cells[(r.label, c)].point) or "–" for c in spec.columns)] for r in spec.rows]
    lines = [f"# {spec.title}", "",
             f"Table `{spec.name}`: {METRIC_TEXT[spec.metric]}, mean ± std over {len(spec.seeds)} seed(s).", "",
             _md_table(["Method", "Budget (runs/cell)", *headers], main), "", budget_text, "",
             _selection_rule(spec), ""]
    if spec.notes:
        lines += [f"Notes: {spec.notes.strip()}", ""]
    if any(r.grid for r in spec.rows):
        lines += ["## Selected grid point per cell", "", _md_table(["Method", *headers], points), ""]
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


def _tex_cell(cell: Cell, best: float) -> str:
    if cell.status != "ok":
        return "div" if cell.status == "diverged" else "--"
    text = f"{cell.mean:.2f}" + ("" if math.isnan(cell.std) else f" $\\pm$ {cell.std:.2f}")
    if cell.mean == best:
        text = f"\\textbf{{{text}}}"
    if cell.n < cell.expected:
        text += f"$^{{({cell.n}/{cell.expected})}}$"
    if cell.diverged:
        text += r"$^\dagger$"
    point = format_point(cell.point)
    return text + (f" {{\\scriptsize ({tex_escape(point)})}}" if point else "")


def _latex(spec: Spec, cells: dict[tuple[str, Any], Cell]) -> str:
    best = _best_per_column(spec, cells)
    budgets, _ = _budgets(spec)
    head = " & ".join(["Method", "Budget", *(tex_escape(column_header(spec, c)) for c in spec.columns)])
    body = [" & ".join([tex_escape(r.label), str(budgets[r.label]),
                        *(_tex_cell(cells[(r.label, c)], best[c]) for c in spec.columns)]) + r" \\"
            for r in spec.rows]
    caption = (f"{tex_escape(spec.title)}. {tex_escape(METRIC_TEXT[spec.metric])}: mean $\\pm$ sample std over "
               f"{len(spec.seeds)} seed(s) at the grid point (small text) with the best mean; budget = runs per cell; "
               "bold: best of the column; $^{(k/m)}$: only k of m seeds completed; $^\\dagger$: a seed diverged at "
               "the chosen point; div: every run diverged; --: no run.")
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
    return Table(spec, cells, _markdown(spec, cells, problems), _latex(spec, cells), _csv(spec, cells), problems)


def status_summary(spec: Spec, df: pd.DataFrame) -> str:
    """One line: runs of this table by status, corrupt records, and runs of other tables ignored."""
    mine = df[df["table"] == spec.name]
    counts = ", ".join(f"{n} {status}" for status, n in mine["status"].value_counts().items()) or "none"
    expected = sum(len(r.points(c)) for r in spec.rows for c in spec.columns) * len(spec.seeds)
    corrupt = int((df["status"] == "corrupt").sum())
    other = len(df) - len(mine) - corrupt
    return (f"{len(mine)} run(s) of table {spec.name} (expected {expected}): {counts}; {corrupt} unreadable "
            f"summary.json; {other} run(s) of other tables or unlabelled ignored")
