"""Accuracy tables (spec ``kind: table``, the default): the reported metric per row × column, the paper's table layout
(Markdown, LaTeX, CSV), its figures, and the claim section.

Selection per row × column: each grid point's (or search trial's) selection metric (the spec's ``metric`` on its
``select_on`` split: validation by default) is averaged over its completed search seeds; the point with the best
mean wins (points where a seed diverged rank after every point where none did; ties → first in trial order). The
cell shows the reported ``metric`` (test) of that point: mean ± sample std over the search seeds, or, when the spec
gives ``confirm_seeds``, over the chosen point re-run with those seeds.

Statistics (:mod:`tvlars.tables.statistics`): two cells differ beyond seed noise when Welch's t-test over their
per-seed values gives a Holm-adjusted p < ALPHA. A column's best cell is bold only then (against the runner-up; the
table's bold tests are one Holm family); the claim section (method rows against baselines, the spec's named
``claims`` with their equivalence tests) is another, and prints every difference with its 95 % interval, raw and
adjusted p. A cell whose mean is within :data:`CHANCE_MARGIN` points of chance (100 / classes %) is marked and never
compared.

Figures: ``accuracy_vs_epoch.png``, ``trust_ratio.png`` (one row of panels per family of trust ratios, as each
optimizer class declares it), ``phi.png`` (φ(t) as the runs recorded it) and ``tuning_curve.png``; the first three
read local run directories (``metrics.jsonl``, ``trust.jsonl``): runs collected from W&B give only the tuning curve.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tvlars.errors import UserError
from tvlars.records import read_jsonl
from tvlars.tables import render
from tvlars.tables.cells import Record, gather, run_state
from tvlars.tables.collect import normalize, point_key
from tvlars.tables.design import Claim, Row, Spec, slug, spec_error
from tvlars.tables.figures import (
    draw_series,
    figure_title,
    panels,
    row_colours,
    save,
    sensible_x,
    tuning_curve,
)
from tvlars.tables.instrument_figures import series
from tvlars.tables.kinds.base import Table, TableKind
from tvlars.tables.lr_schedule import describe_schedule, optimizer_class
from tvlars.tables.statistics import ALPHA, Difference, Equivalence, adjust, std_of, tost, welch

METRICS = ("final_test_top1", "best_test_top1")  # what an accuracy table may report (the first by default)
CHANCE_MARGIN = 5.0  # points above chance level within which a cell counts as "at chance"
_SMALL_SCALE = re.compile(r"mini|smoke", re.IGNORECASE)
FIGURES = ("accuracy_vs_epoch.png", "trust_ratio.png", "phi.png", "tuning_curve.png")
# metrics.jsonl key -> y label of accuracy_vs_epoch.png, which draws the first key a run's metrics hold: validation
# where the run has a validation split (under the protocol test is evaluated once, at the end), else test, else the
# online probe's test (SSL pre-training rows; their linear eval runs after)
CURVE_KEYS = {"val_top1": "validation top-1 (%)", "test_top1": "test top-1 (%)",
              "test_probe_top1": "online-probe test top-1 (%)"}


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
class AccuracyTable(Table):
    """An accuracy table, with the cells that beat their column's runner-up beyond seed noise (bold)."""

    bold: set[tuple[str, Any]] = field(default_factory=set)


def _finite(values: list[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]


def _chance(spec: Spec, records: list[Record], where: str) -> float:
    """Chance-level accuracy (%): 100 / num_classes from the runs' summaries, else the spec's ``chance``."""
    classes = next((r.num_classes for r in records if r.num_classes), None)
    if classes:
        return 100.0 / classes
    if spec.chance is not None:
        return spec.chance
    where_spec = spec.path or f"experiments/{spec.name}.yaml"
    raise UserError(f"table {spec.name}: the chance level of {where} is unknown (its runs' summary.json has no "
                    f"num_classes); add `chance: <accuracy in %>` (e.g. 10.0 for 10 classes) to {where_spec}")


def _cell(spec: Spec, row: Row, column: Any, runs: pd.DataFrame) -> tuple[Cell, list[str]]:
    """Select the point of one cell and gather its reported seeds; returns the cell and its problems."""

    def state(run: Any) -> tuple[str, float]:  # chosen by the selection metric (validation, by default)
        value = float(getattr(run, spec.selection_metric))
        return run_state(run.status, value), value

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
        problems.append(f"{where}: confirmation of the chosen point ({render.format_point(point)}): {len(used)} of "
                        f"{len(reported)} seeds usable (seeds {', '.join(absent)} not)")
    if not used:
        status = "diverged" if diverged else "missing"
        return Cell(row.label, column, status, point=point, diverged=diverged, **base), problems
    values = [float(getattr(r.run, spec.metric)) for r in used]  # reported: the metric itself (test)
    std = std_of(values)
    if diverged:
        problems.append(f"{where}: the chosen point ({render.format_point(point)}) had {diverged} diverged seed(s); "
                        "its mean is over the completed seeds only (marked †)")
    first = used[0].run
    cell = Cell(row.label, column, "ok", statistics.fmean(values), std, len(values), point=point, diverged=diverged,
                runs=[r.run_dir for r in used], values=values,
                chance=_chance(spec, list(found.records.values()), where), edges=render.edges(row, column, point),
                schedule=describe_schedule(first.config, first.lr, first.steps_per_epoch),
                train=_finite([r.run.final_train_top1 for r in used]),
                bn_lag=_finite([r.run.final_test_top1 - r.run.final_test_top1_rawbn for r in used]), **base)
    return cell, problems


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


def _selection_rule(spec: Spec) -> str:
    chosen_by, reported = render.METRIC_TEXT[spec.selection_metric], render.METRIC_TEXT[spec.metric]
    text = (f"Selection rule: {render.protocol_text(spec, chosen_by, 'test')}. For every row and column, each point's "
            f"{chosen_by} is averaged over the search seeds (completed runs only); the point with the best mean is "
            "chosen (points where a seed diverged rank after all others; ties go to the first point in trial order), "
            f"and the cell shows its {reported}: ")
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
    headers = [render.column_header(spec, c) for c in spec.columns]
    return [f"## {title}", "", text, "", render.md_table(["Method", *headers], rows), ""]


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


def _cell_text(cell: Cell, bold: bool = False) -> str:
    """``mean ± std`` with its marks: ``(n=k/m)``, ``†`` (a seed diverged), ``‡`` (runs failed), ``(chance)``."""
    text = f"**{render.mean_std(cell.mean, cell.std)}**" if bold else render.mean_std(cell.mean, cell.std)
    if cell.n < cell.expected:
        text += f" (n={cell.n}/{cell.expected})"
    text += ("†" if cell.diverged else "") + ("‡" if cell.failed else "")
    return text + (" (chance)" if cell.at_chance else "")


def _md_cell(cell: Cell, bold: bool) -> str:
    if cell.status != "ok":
        return {"diverged": "div", "failed": "failed"}.get(cell.status, "–") + ("‡" if cell.failed else "")
    return _cell_text(cell, bold) + render.edge_marks(cell)


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


def _claim_family(compare: list[_Pair], claims: list[_Pair]) -> tuple[list[Difference | Equivalence], str]:
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
            mine, head = cells[(method, column)], render.column_header(spec, column)
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
        head = render.column_header(spec, column)
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
    family, text = _claim_family(list(compare.values()), list(claims.values()))
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
    headers = [render.column_header(spec, c) for c in spec.columns]
    schedules, per_cell = render.schedule_column(spec, cells)
    main = [[r.label, schedules[r.label], str(spec.runs_per_cell(r)),
             *(_md_cell(cells[(r.label, c)], (r.label, c) in bold) for c in spec.columns)] for r in spec.rows]
    points = [[r.label, *(render.format_point(cells[(r.label, c)].point) or "–" for c in spec.columns)]
              for r in spec.rows]
    seeds = spec.reported_seeds
    over = f"mean ± std over {len(seeds)} seed(s)" + (" (confirmation runs of the chosen point)"
                                                       if spec.confirm_seeds else "")
    lines = [f"# {spec.display_title}", "", f"Table `{spec.name}`: {render.METRIC_TEXT[spec.metric]}, {over}.", "",
             *render.protocol_warnings(spec),
             render.md_table(["Method", "LR schedule", "Budget (runs/cell)", *headers], main), "",
             *render.edge_legend(spec, cells), _statistics_rule(spec, tests), "", render.budget_text(spec), "",
             _selection_rule(spec), ""]
    if spec.notes:
        lines += [f"Notes: {spec.notes.strip()}", ""]
    lines += per_cell
    if any(r.grid or r.trials is not None for r in spec.rows):
        lines += ["## Selected point per cell", "", render.md_table(["Method", *headers], points), ""]
    lines += [*_sub_tables(spec, cells), *_claim(spec, cells), ""]
    done = "None: every expected run finished (completed or diverged)."
    return render.page([*lines, *render.problems_section(problems, done)])


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
    text += tex_escape(render.edge_marks(cell))
    point = render.format_point(cell.point)
    return text + (f" {{\\scriptsize ({tex_escape(point)})}}" if point else "")


def _latex(spec: Spec, cells: dict[tuple[str, Any], Cell], bold: set[tuple[str, Any]]) -> str:
    head = " & ".join(["Method", "Budget", *(tex_escape(render.column_header(spec, c)) for c in spec.columns)])
    body = [" & ".join([tex_escape(r.label), str(spec.runs_per_cell(r)),
                        *(_tex_cell(cells[(r.label, c)], (r.label, c) in bold) for c in spec.columns)]) + r" \\"
            for r in spec.rows]
    single = " (one seed: nothing is bold)" if len(spec.reported_seeds) < 2 else ""
    chosen = tex_escape(render.protocol_text(spec, render.METRIC_TEXT[spec.selection_metric], "test"))
    optimistic = " (optimistic: chosen on the test set it reports)" if spec.select_on == "test" else ""
    caption = (f"{tex_escape(spec.display_title)}. {tex_escape(render.METRIC_TEXT[spec.metric])}: mean $\\pm$ sample "
               f"std over {len(spec.reported_seeds)} seed(s) at the point (small text) {chosen}{optimistic}; budget = "
               f"runs per cell; bold: best of the column and better than the runner-up by Welch's t-test, "
               f"Holm-adjusted over the columns, p $<$ {ALPHA:g}{single}; $^{{c}}$: within {CHANCE_MARGIN:g} points of "
               "chance level; $^{(k/m)}$: only k of m seeds completed; $^\\dagger$: a seed diverged at the chosen "
               "point; $^\\ddagger$: runs failed; $^\\triangleleft$ / $^\\triangleright$: the chosen point is the "
               "smallest / largest of its trials in a searched range; div: every run diverged; --: no run.")
    return "\n".join([r"\begin{table}[t]", r"\centering", f"\\caption{{{caption}}}",
                      f"\\label{{tab:{slug(spec.name)}}}", f"\\begin{{tabular}}{{lr{'c' * len(spec.columns)}}}",
                      r"\toprule", head + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
                      r"\end{table}"]) + "\n"


def _csv(spec: Spec, cells: dict[tuple[str, Any], Cell]) -> str:
    lines = []
    for row in spec.rows:
        for column in spec.columns:
            cell = cells[(row.label, column)]
            lines.append([row.label, column, spec.metric, render.number(cell.mean), render.number(cell.std), cell.n,
                          json.dumps(cell.point) if cell.point is not None else "", cell.status])
    return render.csv_text(["row", "column", "metric", "mean", "std", "n_seeds", "chosen_point", "status"], lines)


# --------------------------------------------------------------------------------------------- figures
def _accuracy_curve(run_dir: str) -> tuple[str, pd.Series] | None:
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
    for key in CURVE_KEYS:
        points = {int(r["epoch"]): float(r[key]) for r in rows if "epoch" in r and isinstance(r.get(key), int | float)}
        if points:
            return key, pd.Series(points).sort_index()
    return None


def accuracy_vs_epoch(spec: Spec, table: Table, out_dir: Path) -> list[Path]:
    """``accuracy_vs_epoch.png``: per column, each row's reported runs, validation (else test) top-1 per epoch
    (:data:`CURVE_KEYS`): the mean over seeds with a min–max band; one y-scale for the figure."""
    fig, axes = panels(len(spec.columns))
    colours, keys, last = row_colours(spec), set(), 0
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
            draw_series(ax, x, mean.to_numpy(), *band, colours[row.label], row.label)
            last = max(last, x.max())
        ax.set_title(render.column_header(spec, column))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if not keys:
        return []
    for ax in axes:
        ax.set_xlabel("pre-training epoch" if keys == {"test_probe_top1"} else "epoch")
        sensible_x(ax, last)
    seeds = len(spec.reported_seeds)
    return save(fig, axes, " / ".join(CURVE_KEYS[k] for k in CURVE_KEYS if k in keys),
                figure_title(spec, f"reported runs per cell, mean over {seeds} seed(s)"
                             + (" with min–max band" if seeds > 1 else "")), out_dir / "accuracy_vs_epoch.png")


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


def _trust_family(config: Any) -> str | None:
    """The family of a run's trust ratios, as its optimizer class declares it (``family_of``, e.g.
    :attr:`tvlars.optim.LARS.family`), from the run's resolved config; ``None`` when it declares none."""
    optimizer = config.get("optimizer") if isinstance(config, dict) else None
    declares = getattr(optimizer_class(optimizer), "family_of", None)
    return declares(optimizer) if declares is not None else None


def trust_ratio(spec: Spec, table: Table, df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``trust_ratio.png``: one row of panels per family of trust ratios (its own log y-scale: LARS-family ratios
    include the trust coefficient η, LAMB-family ratios do not), in the order the rows first show them, one panel per
    column: median over adapting layers of the trust ratio vs step and its 10–90 % band across layers (seed mean)."""
    configs = dict(zip(df["run_dir"], df["config"], strict=True))
    series: dict[str, dict[Any, list[tuple[str, pd.DataFrame]]]] = {}
    for column in spec.columns:
        for row in spec.rows:
            runs = table.cells[(row.label, column)].runs
            frames = [q for q in map(_trust_quantiles, runs) if q is not None]
            family = next((f for f in (_trust_family(configs.get(r)) for r in runs) if f), None)
            if frames and family:
                mean = pd.concat(frames).groupby(level=0).mean().dropna()
                series.setdefault(family, {}).setdefault(column, []).append((row.label, mean))
    if not series:
        return []
    fig = Figure(figsize=(max(4.4 * len(spec.columns), 6.0), 3.3 * len(series)), layout="constrained")
    grid = fig.subplots(len(series), len(spec.columns), squeeze=False, sharey="row")
    colours, last = row_colours(spec), max(m.index.max() for f in series.values() for c in f.values() for _, m in c)
    for (family, by_column), axes in zip(series.items(), grid, strict=True):
        for ax, column in zip(axes, spec.columns, strict=True):
            for label, mean in by_column.get(column, []):
                draw_series(ax, mean.index.to_numpy(dtype=float), mean["q50"].to_numpy(), mean["q10"].to_numpy(),
                            mean["q90"].to_numpy(), colours[label], label)
            ax.set_title(f"{render.column_header(spec, column)}: {family}", fontsize="medium")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3, which="both")
            ax.yaxis.set_tick_params(labelleft=True)
            sensible_x(ax, last)
            if ax.has_data():
                ax.set_yscale("log")
        axes[0].set_ylabel("trust ratio (layer median, 10–90 %)")
    axes = [ax for row in grid for ax in row]
    return save(fig, axes, "trust ratio (layer median, 10–90 %)",
                figure_title(spec, "trust ratio of adapting layers (reported runs, seed mean); one y-scale per row"),
                out_dir / "trust_ratio.png")


def phi_curves(spec: Spec, table: Table, df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``phi.png``: the trust-ratio multiplier φ(t) as the runs recorded it (``phi`` in ``trust.jsonl``: TVLARS), per
    column, one curve per row and grid point in the spec's order (the mean over its runs; the chosen point of the cell
    solid and thick), x in epochs."""
    runs = df[df["table"] == spec.name]
    curves: dict[Any, dict[tuple[int, int], list[tuple[pd.Series, float, bool]]]] = {}
    for run in runs.itertuples(index=False):
        column = next((c for c in spec.columns if normalize(c) == normalize(run.column)), None)
        row = next((i for i, r in enumerate(spec.rows) if r.label == run.row), None)
        if column is None or row is None or pd.isna(run.steps_per_epoch):
            continue
        keys = [point_key(p) for p in spec.rows[row].points(column)]
        phi = series(run.run_dir, "trust.jsonl", "phi")
        if run.point in keys and not phi.empty:
            selected = run.run_dir in table.cells[(run.row, column)].runs
            curves.setdefault(column, {}).setdefault((row, keys.index(run.point)), []).append(
                (phi, float(run.steps_per_epoch), selected))
    if not curves:
        return []
    columns = [c for c in spec.columns if c in curves]
    fig, axes = panels(len(columns))
    for ax, column in zip(axes, columns, strict=True):
        several_rows = len({row for row, _ in curves[column]}) > 1
        for (row, index), recorded in sorted(curves[column].items()):
            name, point = spec.rows[row].label, render.format_point(spec.rows[row].points(column)[index])
            name = (f"{name}: {point}" if several_rows else point) if point else name
            selected = any(chosen for _, _, chosen in recorded)
            mean = pd.concat([phi for phi, _, _ in recorded], axis=1).mean(axis=1)
            ax.plot(mean.index.to_numpy(dtype=float) / recorded[0][1], mean.to_numpy(), marker=".",
                    linewidth=2.2 if selected else 1.0, linestyle="-" if selected else "--",
                    label=name + (" (selected)" if selected else ""))
        spes = {spe for recorded in curves[column].values() for _, spe, _ in recorded}
        suffix = f" ({spes.pop():.0f} steps/epoch)" if len(spes) == 1 else ""
        ax.set_title(render.column_header(spec, column) + suffix)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    return save(fig, axes, "φ(t)", figure_title(spec, "trust-ratio multiplier φ(t), as the runs recorded it"),
                out_dir / "phi.png", shared_legend=False)


class Accuracy(TableKind):
    """Accuracy tables (the module docstring)."""

    name = "table"
    metric = METRICS[0]
    csv = "table.csv"
    figure_files = FIGURES

    def check(self, name: str, raw: Mapping[str, Any], rows: list[Row], select_on: str) -> dict[str, Any]:
        metric = raw.get("metric", self.metric)
        if metric not in METRICS:
            raise spec_error(name, f"metric must be one of {METRICS} (got {metric!r})")
        if select_on == "val" and metric.startswith("best_"):
            raise spec_error(name, f"metric {metric} reports the best test epoch, which is chosen on test; use "
                                   "final_test_top1 (chosen on validation), or select_on: test")
        return {"metric": metric}

    def cell(self, spec: Spec, row: Row, column: Any, runs: pd.DataFrame) -> tuple[Cell, list[str]]:
        return _cell(spec, row, column, runs)

    def build(self, spec: Spec, df: pd.DataFrame) -> AccuracyTable:
        """Select every cell from the collected runs ``df`` and render ``table.md``, ``table.tex`` and ``table.csv``."""
        cells, problems = self.select(spec, df)
        bold, tests = significant_best(spec, cells)
        files = {"table.md": _markdown(spec, cells, bold, tests, problems), "table.tex": _latex(spec, cells, bold),
                 self.csv: _csv(spec, cells)}
        return AccuracyTable(spec, cells, files, problems, bold)

    def figures(self, spec: Spec, table: Table, df: pd.DataFrame, out: Path) -> list[Path]:
        title = figure_title(spec, f"tuning curve: best of the first k points (mean over {len(spec.seeds)} search "
                                   f"seed(s), chosen on {render.SPLIT_TEXT[spec.select_on]})")
        ylabel = f"best so far: {render.METRIC_TEXT[spec.selection_metric]}"
        tuning = tuning_curve(spec, table.cells, out, ylabel, title)
        return [*accuracy_vs_epoch(spec, table, out), *trust_ratio(spec, table, df, out),
                *phi_curves(spec, table, df, out), *tuning]


ACCURACY = Accuracy()
