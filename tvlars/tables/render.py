"""The text every kind of table is made of: headers, values and points as the tables print them, Markdown tables,
CSV files, the marks of a chosen point at the end of its searched range, the LR-schedule column, the protocol's
wording, and the Problems section.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from tvlars.tables.design import Row, Spec

METRIC_TEXT = {"best_test_top1": "best-epoch test top-1 (%)", "final_test_top1": "final-epoch test top-1 (%)",
               "final_val_top1": "final-epoch validation top-1 (%)"}
SPLIT_TEXT = {"val": "validation", "test": "test"}
EDGE_MARKS = {"smallest": "◂", "largest": "▸"}  # the chosen point sits at this end of a searched range
MIN_EDGE_VALUES = 3  # distinct values a dimension needs among a cell's trials before its ends mean anything


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


def mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std``, or ``mean`` alone when ``std`` is NaN (one seed)."""
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{digits}f}"


def number(value: float) -> str:
    """A CSV number: 4 decimals, empty for NaN."""
    return "" if math.isnan(value) else f"{value:.4f}"


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


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (pipes in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV file's text: ``header``, then one line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def budget_text(spec: Spec) -> str:
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


def problems_section(problems: list[str], done: str) -> list[str]:
    """The ``## Problems`` section: one item per problem, or ``done`` when there is none."""
    return ["## Problems", "", *([f"- {p}" for p in problems] or [done])]


def page(lines: list[str]) -> str:
    """A Markdown file's text from its lines: trailing blank lines dropped, one newline at the end."""
    return "\n".join(lines).rstrip() + "\n"
