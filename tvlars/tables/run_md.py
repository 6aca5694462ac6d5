"""``RUN.md``: how a table's results were produced, written by ``make tables`` from the run records and the spec
only (:func:`write`), so that it rebuilds byte for byte and states nothing that neither holds.

Sections: the commands; the study's design (the spec) and its runs by status; optimizer steps and data (the splits
of the runs' configs, the steps per epoch of their summaries and the training-set size these imply); machine and
software (the summaries' device, world size, versions, code hash and git commit, each with its number of runs); the
summed run time (Σ ``wall_time_s``) per row and column, and how much of it is training steps (Σ ``epoch_time_s``);
the records' count and size; the instruments' summary; the spec's ``discussion`` (the reading of the results,
checked at load to quote no measured number).

**Instrument summary** (runs with ``sharpness.jsonl`` or ``noise_scale.jsonl``; only for the kinds whose instrument
figures are drawn, not kind lr_window's). The windows follow each run's planned length T = epochs × steps per
epoch, not a choice made after seeing the curves: early is the first third (step ≤ T/3), late the last third
(step > 2T/3). Per run: λ_max early / late is the mean of its measurements in the window and the peak its largest;
B_simple early is the median of its estimates in the early window (single estimates are noisy, even negative). A
cell gives mean ± sample std over its row's finished runs at that column (every trial and seed, as the instrument
figures draw them). With ``compare`` (accuracy tables) each method row is tested against each baseline on each
quantity, Welch's t-test over runs, Holm-adjusted over the section (one family).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tvlars.paths import EXPERIMENTS_DIR
from tvlars.records import FINAL, read_jsonl, write_atomic
from tvlars.tables.archive import size
from tvlars.tables.collect import WANDB_PREFIX, normalize
from tvlars.tables.design import Spec
from tvlars.tables.kinds import KINDS
from tvlars.tables.render import column_header, format_value, md_table, page, seeds_text
from tvlars.tables.statistics import Difference, adjust, p_text, welch

FILE = "RUN.md"
EARLY, LATE = 1, 2  # the early window ends at EARLY/3 of the planned steps, the late one starts after LATE/3
MISSING = "–"  # a field the records do not hold


# --------------------------------------------------------------------------------------------- helpers
def _text(value: Any) -> str:
    """A recorded value as shown: ``–`` when absent, booleans in words, numbers compact."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, int) else format_value(value)


def _count(items: Iterable[tuple[str, ...]]) -> list[list[str]]:
    """Distinct tuples with their number of runs, sorted (deterministic whatever the order of the records)."""
    return [[*key, str(n)] for key, n in sorted(Counter(items).items())]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _bytes(count: int) -> str:
    return f"{count / 1e3:.0f} kB" if count < 1e6 else f"{count / 1e6:.1f} MB"


def _number(value: float) -> str:
    """An instrument value: one decimal, none from 100 on."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _shipped(spec: Spec) -> bool:
    """Whether the spec is one of ``experiments/`` (else a file passed by path)."""
    return spec.path is None or spec.path.parent.resolve() == EXPERIMENTS_DIR.resolve()


def _spec_file(spec: Spec) -> str:
    """The spec as the repository names it (never an absolute path)."""
    return f"experiments/{spec.name}.yaml" if _shipped(spec) else spec.path.name


def _columns(spec: Spec, runs: pd.DataFrame) -> pd.Series:
    """Each run's spec column (``None`` outside the spec's columns)."""
    by_form = {str(normalize(c)): c for c in spec.columns}
    return runs["column"].map(lambda c: by_form.get(str(normalize(c))))


def _config(run: Any, *keys: str) -> Any:
    """A value of a run's resolved config by its path of keys, or ``None``."""
    node = run.config
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


# --------------------------------------------------------------------------------------------- sections
def _commands(spec: Spec) -> list[str]:
    table = spec.name if _shipped(spec) else _spec_file(spec)
    if spec.profile == "smoke":
        lines = [f"make reproduce-table TABLE={table} PROFILE=smoke   # the smoke profile: runs/smoke/{spec.name}/",
                 f"python -m tvlars.tables.build --table {table} --profile smoke --source runs/smoke/{spec.name}"]
    else:
        lines = [f"make reproduce-table TABLE={table}   # sweep the runs into runs/{spec.name}/, then write this "
                 "directory",
                 f"make tables TABLE={table}            # rebuild every file here from runs/ below; nothing re-runs"]
    return ["## Commands", "", "```bash", *lines, "```", ""]


def _design(spec: Spec) -> str:
    """The study's shape: rows × columns × points × seeds (+ confirmation) = runs."""
    row = spec.rows[0]
    total = sum(spec.runs_per_cell(r) for r in spec.rows) * len(spec.columns)
    columns = f"{spec.column_key} ∈ {{{', '.join(map(str, spec.columns))}}}"
    if spec.sweep:
        return (f"{_plural(len(spec.rows), 'row')} × {spec.budget(row)} values of `{spec.sweep}` per row at "
                f"{columns} × {seeds_text(spec.seeds)} = {total} runs; nothing is selected.")
    points = _plural(spec.budget(row), "search trial" if row.trials is not None else "grid point")
    text = (f"{_plural(len(spec.rows), 'row')} × {_plural(len(spec.columns), 'column')} ({columns}) × {points} × "
            f"search {seeds_text(spec.seeds)}")
    if spec.confirm_seeds:
        new = len(set(spec.confirm_seeds) - set(spec.seeds))
        text += (f", then each cell's chosen point re-run with confirmation {seeds_text(spec.confirm_seeds)} "
                 f"({new} not run by the search)")
    return text + f" = {spec.runs_per_cell(row)} runs per cell, {total} in all."


def _study(spec: Spec, df: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(runs["status"].value_counts().items())) or "none"
    lines = ["## Study", "", f"- Design (the spec `{_spec_file(spec)}`): {_design(spec)}",
             f"- Runs of the table in the records: {len(runs)} ({counts})."]
    corrupt = int((df["status"] == "corrupt").sum())
    if corrupt:
        lines.append(f"- Unreadable `summary.json`: {corrupt} (listed under the table's Problems).")
    return [*lines, ""]


def _training_set(runs: pd.DataFrame) -> str:
    """The training-set size that steps per epoch × B imply (a DataLoader that drops the last partial batch, one
    process), intersected over the batch sizes; empty when it cannot be derived."""
    low, high = 0, math.inf
    for run in runs.itertuples(index=False):
        steps, batch = run.steps_per_epoch, _config(run, "batch_size")
        if pd.isna(steps) or not isinstance(batch, int) or _field(run, "world_size") != "1":
            return ""
        low, high = max(low, int(steps) * batch), min(high, (int(steps) + 1) * batch - 1)
    if runs.empty or low > high:
        return ""
    size = f"{low} images" if low == high else f"between {low} and {high} images"
    return (f"- Training set: {size}, implied by steps per epoch = ⌊images / B⌋ (the last partial batch is dropped; "
            "one process) at every batch size above.")


def _data(spec: Spec, runs: pd.DataFrame) -> list[str]:
    columns = _columns(spec, runs)
    steps = []
    for column in spec.columns:
        mine = runs[columns == column]
        combos = Counter((r.steps_per_epoch, r.epochs, planned_steps(r)) for r in mine.itertuples(index=False)
                         if planned_steps(r) is not None)
        steps += [[column_header(spec, column), *map(_text, combo), str(n)] for combo, n in sorted(combos.items())]
    rows = list(runs.itertuples(index=False))
    splits = _count((_text(_config(r, "dataset", "_target_")), _text(_config(r, "train_subset")),
                     _text(_config(r, "dataset", "val_size")), _text(_config(r, "val_subset")),
                     _text(_config(r, "test_subset"))) for r in rows)
    classes = _count((_text(r.num_classes),) for r in rows)
    paths = _count((_field(r, "data_path"),) for r in rows)
    lines = ["## Optimizer steps and data", "",
             "Per column, from the runs' summaries (`steps_per_epoch`) and configs (`epochs`): the optimizer steps "
             "each run could take (a run that stops at a target takes fewer).", "",
             md_table(["column", "steps per epoch", "epochs", "steps per run", "runs"], steps), "",
             "Data, from the runs' configs (`0`: the whole split; `–`: the key is not in the configs):", "",
             md_table(["dataset", "`train_subset`", "`dataset.val_size`", "`val_subset`", "`test_subset`", "runs"],
                      splits), ""]
    facts = [_training_set(runs),
             "- Classes (`num_classes`): " + "; ".join(f"{c} ({n} runs)" for c, n in classes) + ".",
             "- Data path (`data_path`): " + "; ".join(f"{p} ({n} runs)" for p, n in paths) + "."]
    return [*lines, *(f for f in facts if f), ""]


def _field(run: Any, key: str, sub: str | None = None) -> str:
    """A provenance field of a collected run (``sub``: a key inside it, e.g. ``versions``/``torch``), as shown."""
    value = run.provenance.get(key) if isinstance(run.provenance, Mapping) else None
    if sub is not None:
        value = value.get(sub) if isinstance(value, Mapping) else None
    return _text(value)


def _machine(runs: pd.DataFrame) -> list[str]:
    rows = list(runs.itertuples(index=False))
    machines = _count((_field(r, "device"), _field(r, "device_name"), _field(r, "world_size"),
                       *(_field(r, "versions", k) for k in ("python", "torch", "torchvision", "tvlars")))
                      for r in rows)
    code = _count((_field(r, "code_hash"), _field(r, "git_commit")[:12], _field(r, "git_dirty"),
                   _field(r, "git_diff_hash")) for r in rows)
    return ["## Machine and software", "", "As the runs' summaries state them, with the number of runs of each:", "",
            md_table(["device", "device name", "world size", "Python", "torch", "torchvision", "tvlars", "runs"],
                     machines), "",
            md_table(["`code_hash`", "`git_commit`", "uncommitted changes", "`git_diff_hash`", "runs"], code), ""]


def _time(spec: Spec, runs: pd.DataFrame) -> list[str]:
    seconds = runs["wall_time_s"].astype(float)
    timed = runs[seconds.map(math.isfinite).astype(bool)]
    total = float(timed["wall_time_s"].sum())
    lines = ["## Run time", "",
             f"Summed run time (Σ `wall_time_s` over the {len(timed)} runs that record it, of {len(runs)}): "
             f"{_minutes(total)} ({total / 3600:.1f} h). The records do not hold the study's elapsed time (runs may "
             "have run side by side). Per row and column:", ""]
    columns = _columns(spec, timed)

    def spent(mask: pd.Series) -> str:
        return _minutes(float(timed.loc[mask, "wall_time_s"].sum())) if mask.any() else MISSING

    wide = len(spec.columns) > 1
    body = [[row.label, *(spent((timed["row"] == row.label) & (columns == c)) for c in spec.columns),
             *([spent(timed["row"] == row.label)] if wide else [])] for row in spec.rows]
    if len(spec.rows) > 1:
        body.append(["all rows", *(spent(columns == c) for c in spec.columns),
                     *([spent(columns.notna())] if wide else [])])
    headers = ["Method", *(column_header(spec, c) for c in spec.columns), *(["all columns"] if wide else [])]
    lines += [md_table(headers, body), ""]
    placed = timed["row"].isin([r.label for r in spec.rows]) & columns.notna()
    if not placed.all():
        lines += [f"{int((~placed).sum())} timed run(s) outside the spec's rows and columns count in the sum only.",
                  ""]
    return lines + _outside_epochs(timed)


def _local(run_dir: str) -> bool:
    """Whether a run's records are a local directory (not collected from W&B)."""
    return not str(run_dir).startswith(WANDB_PREFIX)


EPOCH_TIMES = ("epoch_time_s", "measure_time_s")  # training steps; the sharpness and noise-scale measurements


def _epoch_times(run_dir: str) -> dict[str, float]:
    """Σ of each of :data:`EPOCH_TIMES` over a local run's ``metrics.jsonl`` (read once), NaN where no row records
    it."""
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl") if _local(run_dir) else []
    sums = {key: [float(r[key]) for r in rows if isinstance(r.get(key), int | float)] for key in EPOCH_TIMES}
    return {key: sum(times) if times else math.nan for key, times in sums.items()}


def _outside_epochs(timed: pd.DataFrame) -> list[str]:
    """How the summed run time splits into training steps and the rest, over the runs with per-epoch times."""
    times = pd.DataFrame([_epoch_times(d) for d in timed["run_dir"]], index=timed.index, columns=list(EPOCH_TIMES))
    training, measured = times["epoch_time_s"], times["measure_time_s"]
    known = training.notna()
    if not known.any():
        return []
    wall, steps = float(timed.loc[known, "wall_time_s"].sum()), float(training[known].sum())
    text = (f"Split over the {int(known.sum())} runs whose `metrics.jsonl` times their epochs ({_minutes(wall)}): "
            f"training steps (Σ `epoch_time_s`) {_minutes(steps)} ({100 * steps / wall:.0f} %), the rest of the "
            f"epochs {_minutes(wall - steps)} ({100 * (wall - steps) / wall:.0f} %): evaluation (and precise BN, "
            "where on) and the sharpness and noise-scale measurements. Trust-ratio snapshots count as training "
            "steps; start-up and checkpoints are in neither.")
    timing = measured.notna()
    if timing.any():
        wall, spent = float(timed.loc[timing, "wall_time_s"].sum()), float(measured[timing].sum())
        text += (f" The {int(timing.sum())} runs that time their measurements spent {_minutes(spent)} on them "
                 f"(Σ `measure_time_s`), {100 * spent / wall:.0f} % of their {_minutes(wall)}.")
    return [text, ""]


def _records(records: Path | None, source: str) -> list[str]:
    if records is None:
        return ["## Records", "", f"Read from `{source}`; no record is copied here.", ""]
    count, total = size(records)
    files = Counter(p.relative_to(records).parts[1:] for p in records.rglob("*")
                    if p.is_file() and len(p.relative_to(records).parts) > 1)
    listing = ", ".join(f"`{'/'.join(parts)}` ({n})" for parts, n in sorted(files.items()))
    return ["## Records", "",
            f"`runs/` holds {count} run directories, {_bytes(total)}: {listing or 'no files'}. `make tables` "
            "rebuilds every file of this directory from them, byte for byte.", ""]


# --------------------------------------------------------------------------------------------- instruments
@dataclass(frozen=True)
class Quantity:
    """One instrument summary: a value per run from one of its JSONL files."""

    name: str
    file: str
    key: str
    window: str  # early | late | all
    reduce: Callable[[list[float]], float]


QUANTITIES = (Quantity("λ_max early", "sharpness.jsonl", "lambda_max", "early", statistics.fmean),
              Quantity("λ_max peak", "sharpness.jsonl", "lambda_max", "all", max),
              Quantity("λ_max late", "sharpness.jsonl", "lambda_max", "late", statistics.fmean),
              Quantity("B_simple early", "noise_scale.jsonl", "b_simple", "early", statistics.median))


def planned_steps(run: Any) -> int | None:
    """T = epochs × steps per epoch of a collected run, or ``None`` when its record lacks either."""
    if pd.isna(run.steps_per_epoch) or run.epochs is None or pd.isna(run.epochs):
        return None
    return int(run.epochs) * int(run.steps_per_epoch)


def in_window(step: int, planned: int, window: str) -> bool:
    """Whether ``step`` lies in the early (step ≤ T/3), late (step > 2T/3) or whole (``all``) window of T steps."""
    if window == "early":
        return 3 * step <= EARLY * planned
    return 3 * step > LATE * planned if window == "late" else True


def run_value(run_dir: Path, planned: int, quantity: Quantity) -> float:
    """``quantity`` of one run: its reduction over the finite measurements in its window (NaN without any)."""
    values = [float(r[quantity.key]) for r in read_jsonl(run_dir / quantity.file)
              if isinstance(r.get("step"), int) and in_window(r["step"], planned, quantity.window)
              and isinstance(r.get(quantity.key), int | float) and math.isfinite(r[quantity.key])]
    return quantity.reduce(values) if values else math.nan


def _summary(values: list[float]) -> str:
    """Mean ± sample std of the finite values, both with the mean's decimals; ``(n=k)`` when some runs lack one."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return MISSING
    mean = statistics.fmean(finite)
    digits = 0 if abs(mean) >= 100 else 1
    text = f"{mean:.{digits}f}" + (f" ± {statistics.stdev(finite):.{digits}f}" if len(finite) > 1 else "")
    return text + (f" (n={len(finite)})" if len(finite) < len(values) else "")


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "") + _number(value)


def _difference(d: Difference) -> str:
    verdict = "significant" if d.significant else "not significant"
    return (f"{_signed(d.diff)} (95 % CI {_signed(d.low)} to {_signed(d.high)}, {p_text(d.p)}, Holm "
            f"{p_text(d.holm)}: {verdict})")


def instrument_section(spec: Spec, runs: pd.DataFrame) -> list[str]:
    """The instruments' summary per row × column (module docstring), with the method-vs-baseline tests."""
    local = runs["run_dir"].map(_local).astype(bool)
    finished = runs[runs["status"].isin(FINAL) & local]
    columns = _columns(spec, finished)
    present = [q for q in QUANTITIES if any((Path(d) / q.file).is_file() for d in finished["run_dir"])]
    if not KINDS[spec.kind].instruments or not present:
        return []
    late = any(q.window == "late" for q in present)
    cells: dict[tuple[str, Any], dict[str, list[float]]] = {}
    body = []
    for row in spec.rows:
        for column in spec.columns:
            mine = finished[(finished["row"] == row.label) & (columns == column)]
            plans = [(Path(r.run_dir), planned_steps(r)) for r in mine.sort_values("run_dir").itertuples(index=False)]
            plans = [(d, t) for d, t in plans if t is not None]
            if not plans:
                continue
            values = {q.name: [run_value(d, t, q) for d, t in plans] for q in present}
            cells[(row.label, column)] = values
            bounds = ", ".join(sorted({f"≤ {t // 3}" + (f" / > {2 * t // 3}" if late else "") for _, t in plans}))
            body.append([row.label, column_header(spec, column), str(len(plans)), bounds,
                         *(_summary(values[q.name]) for q in present)])
    lines = ["## Instruments", "",
             "From each finished run's `sharpness.jsonl` and `noise_scale.jsonl`. Windows by the run's planned steps "
             "T = epochs × steps per epoch: early = steps ≤ T/3, late = steps > 2T/3. Per run, λ_max early and late "
             "are the means of its measurements in the window, λ_max peak its largest measurement, B_simple early the "
             "median of its estimates in the early window; each cell gives mean ± sample std over the row's finished "
             "runs at that column (every trial and seed, as in the figures; `(n=k)`: only k runs measured it).", "",
             md_table(["Method", "column", "runs", "early / late steps" if late else "early steps",
                       *(q.name for q in present)], body), ""]
    return lines + _instrument_tests(spec, cells, present)


def _instrument_tests(spec: Spec, cells: dict[tuple[str, Any], dict[str, list[float]]],
                      present: list[Quantity]) -> list[str]:
    """Each ``compare.method`` row against each baseline per column and quantity: Welch over runs, one Holm family."""
    if spec.compare is None:
        return []
    tests: list[tuple[str, Difference | None, str]] = []
    for method in spec.compare.method:
        for baseline in spec.compare.baselines:
            for column in spec.columns:
                a, b = cells.get((method, column)), cells.get((baseline, column))
                for q in present if a and b else ():
                    difference, why = welch([v for v in a[q.name] if math.isfinite(v)],
                                            [v for v in b[q.name] if math.isfinite(v)])
                    tests.append((f"{column_header(spec, column)}, {q.name}: {method} − {baseline}", difference, why))
    if not tests:
        return []
    adjust([d for _, d, _ in tests if d is not None])
    count = sum(d is not None for _, d, _ in tests)
    lines = [f"Each method row against each baseline (`compare`), per column and quantity: the difference of the "
             f"means with Welch's 95 % interval over runs and the two-sided p-value, Holm-adjusted over these {count} "
             "test(s) (one family).", ""]
    lines += [f"- {what}: {_difference(d) if d is not None else f'no test ({why})'}." for what, d, why in tests]
    return [*lines, ""]


# --------------------------------------------------------------------------------------------- entry point
def render(spec: Spec, df: pd.DataFrame, records: Path | None, source: str) -> str:
    """RUN.md of ``spec`` from the collected runs ``df`` and the copied ``records`` (``None``: read from
    ``source``, W&B, nothing copied)."""
    runs = df[df["table"] == spec.name]
    lines = [f"# How these results were produced: {spec.display_title}", "",
             f"Generated by `make tables` from the run records (`runs/`) and the spec `{_spec_file(spec)}`: every "
             "number here is read from them. The reading of the results is the spec's `discussion` (the last "
             "section); the results themselves are in the table and figures beside this file.", "",
             *_commands(spec), *_study(spec, df, runs)]
    if runs.empty:  # an --allow-empty build: nothing to describe, nothing to discuss
        return page([*lines, *_records(records, source)])
    lines += [*_data(spec, runs), *_machine(runs), *_time(spec, runs), *_records(records, source),
              *instrument_section(spec, runs)]
    if spec.discussion:
        lines += ["## Discussion", "", spec.discussion, ""]
    return page(lines)


def write(spec: Spec, df: pd.DataFrame, out: Path, source: str) -> Path:
    """Write ``<out>/RUN.md`` (:func:`render`; the records are ``<out>/runs`` for a local source)."""
    local = not source.startswith(WANDB_PREFIX)
    path = out / FILE
    write_atomic(path, render(spec, df, out / "runs" if local else None, source).encode())
    return path
