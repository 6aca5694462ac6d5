"""A reproduction's cells against the committed table's: same value, within seed noise, or different.

The committed ``table.csv`` (a scaling table's ``scaling.csv``: steps to target) holds each cell's mean, sample std
and seed count, so the test is Welch's t-test from those statistics
(``scipy.stats.ttest_ind_from_stats(equal_var=False)``, two-sided, p < ALPHA: different). When one side has a
single seed, that value is tested against the other side's seeds as a new draw from them (prediction-interval
t-test: ``t = (x - mean) / (std * sqrt(1 + 1/n))``, n - 1 degrees of freedom); with one seed on both sides, or no
spread, seed noise is unknown and the cell is *untestable*, never called different.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Mapping
from typing import Any

from scipy import stats

from tvlars.tables.collect import normalize
from tvlars.tables.design import Spec
from tvlars.tables.render import column_header, md_table, number, page
from tvlars.tables.statistics import ALPHA

VERDICTS = {"same": "same value", "noise": "within seed noise", "different": "different",
            "untestable": "untestable (seed noise unknown)", "new": "not in the committed table"}
SYMBOLS = {"same": "=", "noise": "≈", "different": "≠", "untestable": "?", "new": "new"}
TABLE_FIELDS = {"column": "column", "mean": "mean", "std": "std", "n_seeds": "n_seeds"}  # name -> CSV header


def _stats(row: dict[str, str]) -> tuple[float, float, int]:
    def number(text: str) -> float:
        return float(text) if text else math.nan

    return number(row["mean"]), number(row["std"]), int(row["n_seeds"] or 0)


def verdict(old: dict[str, str] | None, status: str, mean: float, std: float, n: int) -> tuple[str, str]:
    """One cell's verdict key and a short reason, comparing the committed CSV row ``old`` with the new cell."""
    if old is None:
        return "new", ""
    old_mean, old_std, old_n = _stats(old)
    if old["status"] != status or status != "ok":
        return ("same", "") if old["status"] == status else ("different", f"{old['status']} → {status}")
    mean = float(number(mean) or math.nan)  # as the CSV wrote the committed one: 90.35499… and 90.3550 are the same
    if f"{old_mean:.2f}" == f"{mean:.2f}":
        return "same", ""
    shift = f"{old_mean:.2f} → {mean:.2f}"
    if min(old_n, n) >= 2 and (old_std > 0 or std > 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_ind_from_stats(old_mean, old_std, old_n, mean, std, n, equal_var=False).pvalue)
        return ("different" if p < ALPHA else "noise"), f"{shift}, Welch p = {p:.3f}"
    (single, _, _), (sample_mean, sample_std, sample_n) = sorted([(old_mean, old_std, old_n), (mean, std, n)],
                                                                key=lambda side: side[2])
    if sample_n < 2 or not sample_std > 0:
        return "untestable", f"{shift}; one seed each or no spread"
    t = (single - sample_mean) / (sample_std * math.sqrt(1 + 1 / sample_n))
    p = float(2 * stats.t.sf(abs(t), sample_n - 1))
    return ("different" if p < ALPHA else "noise"), f"{shift}; one seed against {sample_n}: prediction p = {p:.3f}"


def compare(committed_csv: str, spec: Spec, cells: Mapping[tuple[str, Any], Any], fields: Mapping[str, str]) -> str:
    """The short Markdown report: a verdict per cell (its ``status``, ``mean``, ``std`` and seed count ``n``), the
    counts, and the cells that changed. ``fields`` names the CSV's columns for the cell's column, mean, std and seed
    count (the kind's ``compare_fields``)."""
    old: dict[tuple[str, Any], dict[str, str]] = {}
    for r in csv.DictReader(io.StringIO(committed_csv)):
        cell = {**r, **{name: r[header] for name, header in fields.items()}}
        old[(cell["row"], normalize(cell["column"]))] = cell
    counts = dict.fromkeys(VERDICTS, 0)
    grid, changed = [], []
    for row in spec.rows:
        line = [row.label]
        for column in spec.columns:
            cell = cells[(row.label, column)]
            key, reason = verdict(old.get((row.label, normalize(column))), cell.status, cell.mean, cell.std, cell.n)
            counts[key] += 1
            line.append(SYMBOLS[key])
            if reason:
                changed.append(f"- {row.label} @ {column_header(spec, column)}: {VERDICTS[key]} ({reason})")
        grid.append(line)
    return report(spec, counts, "Welch's t-test from the cells' mean, std and seed count; one seed against several: "
                  f"prediction-interval t-test; p < {ALPHA:g}: different",
                  md_table(["Method", *(column_header(spec, c) for c in spec.columns)], grid), changed)


def report(spec: Spec, counts: Mapping[str, int], how: str, verdicts: str, changed: list[str]) -> str:
    """The comparison's Markdown: how many of each verdict (``counts``), the legend and ``how`` they were judged, the
    table of ``verdicts``, then the cells that ``changed``."""
    legend = ", ".join(f"{SYMBOLS[k]} {VERDICTS[k]}" for k in VERDICTS)
    summary = ", ".join(f"{n} {VERDICTS[k]}" for k, n in counts.items() if n)
    return page([f"# {spec.name}: reproduction vs the committed table", "", f"{summary} ({legend}; {how}).", "",
                 verdicts, "", *changed])
