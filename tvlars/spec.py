"""Experiment specs (``tvlars/experiments/<table>.yaml``): one table as a grid or search, a selection rule, a layout.

A spec expands into jobs (one training run each); jobs become Hydra configs that one ``--multirun`` sweeps
with any launcher; the report code turns the runs' ``summary.json`` records back into the table.

Spec keys::

    name, title, claim      table id (= file name), caption, the paper's claim this table tests
    kind                    table (default: accuracy per row × column) | scaling (steps to target against batch
                            size and the critical batch size, tvlars.report.scaling) | lr_window (accuracy against
                            one swept key per row, and each row's stable window of it, tvlars.report.lr_window)
    sweep                   kind lr_window: the swept config key (e.g. optimizer.lr); every row's grid is
                            {<sweep>: [values]} (at least 2 distinct numbers > 0; a {column: [values]} map also works)
    window_tolerance        kind lr_window: the window holds the swept values whose mean validation top-1 is within
                            this many points of the row's best (default 2)
    base                    Hydra overrides shared by every job (e.g. [dataset=cifar10, model=resnet18])
    columns                 {key: batch_size, values: [512, 1024, ...]}  (the table's columns)
    seeds                   [0, 1, ...]  (every grid point / search trial runs with each)
    confirm_seeds           [1, 2, 3, 4]  optional: the chosen point of each cell re-runs with these seeds and the
                            table reports them; disjoint from ``seeds`` (the search run is never reported)
    reuse_search_seeds      true: allow confirm_seeds to include search seeds (records made before the rule;
                            the table says so)
    metric                  final_test_top1 (default) | best_test_top1: the reported value; steps_to_target for
                            kind scaling (its default and only metric)
    select_on               val (default): choose each cell's point by the same metric on the validation split
                            (``final_val_top1``; scaling: the target must be a ``val_`` metric) | test: by the
                            reported metric itself (the paper's protocol; the table carries a warning)
    min_steps               optimizer steps every run must have to compare schedules (default 50; 0: no check)
    min_warmup_steps        optimizer steps every warm-up must span (default 10; 0: no check)
    rows                    [{label, overrides: [...], grid: {...} | search: {...}}]
    compare                 {method: [labels], baselines: [labels], no_warmup: [labels]} for the claim section
                            (baselines default to every other row; no_warmup is a subset of the baselines)
    claims                  [{a: <row label>, b: <row label>, question: <text>, margin: <points>}]: named pairwise
                            claims, a − b per column by Welch's test and, with the optional margin, an equivalence
                            test (TOST) within ± margin points (tvlars.report.tables)
    chance                  chance-level accuracy in % (used when a run's summary has no num_classes)
    notes                   free text printed under the table: design only (what the runs are and why); numbers the
                            records give (steps per epoch, run times...) are generated in RUN.md, not typed here
    discussion              optional: the reading of the results, printed at the end of RUN.md; it may quote only
                            numbers of the spec itself (design values: its base, columns, seeds, rows, notes...),
                            checked at load: measured numbers live in the generated table and RUN.md, which it
                            points to. Not inherited through ``extends`` (it reads one study's records)
    smoke                   extra overrides for --profile smoke (e.g. dataset.verify_checksums=false)
    extends                 another spec whose keys this one inherits (top-level keys replace, not merge)

A row's ``grid`` is the Cartesian product of its keys' values (a dict gives per-column values). A row's
``search`` is ``{trials: N, space: {key: {log: [lo, hi]} | {linear: [lo, hi]} | [choices] | {column: ...}}}``:
N points of a scrambled Sobol sequence (scipy.stats.qmc) seeded from the spec name (``seed`` in the search
adds to it), mapped into the space (log-uniform, uniform, or one of the choices) and rounded to 3 significant
digits, so the trial list is the same at every load and a rerun finds its finished trials. Every row gets the
same number of points per cell (its tuning budget), checked here.

Selection: for each row × column, the point with the best mean selection metric (``metric`` on the ``select_on``
split) over ``seeds``; the table shows the mean ± std of ``metric`` over ``confirm_seeds`` at that point when
given, else over ``seeds``.

A ``kind: scaling`` spec has ``columns: {key: batch_size, ...}``, sets the target in ``base``
(``target.metric=...``, ``target.value=...``, optionally ``target.stop=true``, ``eval_every_steps=...``) and
leaves ``target.*`` out of rows, grids and searches: every cell is measured against the same target.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
import zlib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from scipy.stats import qmc

from tvlars.errors import UserError

EXPERIMENTS_DIR = Path(str(files("tvlars") / "experiments"))  # shipped with the package, like the configs
METRICS = ("final_test_top1", "best_test_top1")
SPLITS = ("val", "test")  # where a spec selects (select_on)
MIN_STEPS = 50  # default min_steps: fewer optimizer steps cannot tell schedules apart
MIN_WARMUP_STEPS = 10  # default min_warmup_steps (tvlars.schedules.warmup_cosine.MIN_WARMUP_STEPS)
KINDS = ("table", "scaling", "lr_window")
SCALING_METRIC = "steps_to_target"  # the metric of kind scaling: fewest optimizer steps to the target
WINDOW_METRIC = "final_val_top1"  # the metric of kind lr_window's window (validation; test is reported beside)
WINDOW_TOLERANCE = 2.0  # default window_tolerance: points of validation top-1 below the row's best
_SPEC_KEYS = {"name", "title", "claim", "kind", "base", "columns", "seeds", "confirm_seeds", "metric", "rows",
              "select_on", "reuse_search_seeds", "min_steps", "min_warmup_steps",
              "compare", "claims", "chance", "notes", "smoke", "extends", "sweep", "window_tolerance", "discussion"}
_ROW_KEYS = {"label", "overrides", "grid", "search"}
_SEARCH_KEYS = {"trials", "space", "seed"}
_COMPARE_KEYS = {"method", "baselines", "no_warmup"}
_CLAIM_KEYS = {"a", "b", "question", "margin"}
_DISTRIBUTIONS = ("log", "linear")
SIGNIFICANT_DIGITS = 3  # search values are rounded to this many significant digits (readable, stable run ids)
# A number in prose: not part of a name (CIFAR-10, top-1, ResNet-18, log10, v2), optionally decimal or in e-notation.
_NUMBER = re.compile(r"(?<![\w.])(?<![^\W\d_]-)\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _is_number(value: Any) -> bool:
    """A grid value that is a number (``1e-3`` arrives from YAML as a string)."""
    try:
        return not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Row:
    label: str
    overrides: tuple[str, ...]
    grid: dict[str, Any]  # key -> list of values, or {column value: list of values}
    trials: dict[Any, list[dict[str, Any]]] | None = None  # search rows: column -> trial points, in trial order
    ranges: dict[Any, tuple[str, ...]] = field(default_factory=dict)  # search rows: column -> keys drawn from a range

    def _axes(self, column: Any) -> dict[str, list[Any]]:
        return {k: (v.get(column, []) if isinstance(v, dict) else v) for k, v in self.grid.items()}

    def points(self, column: Any) -> list[dict[str, Any]]:
        """The grid points or search trials (``{key: value}``) of this row at ``column``, in trial order."""
        if self.trials is not None:
            return [dict(p) for p in self.trials[column]]
        axes = self._axes(column)
        return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]

    def continuous(self, column: Any) -> list[str]:
        """The keys along which this row's points at ``column`` sample a numeric range: a search's ``log`` or
        ``linear`` dimensions (not its lists of choices), or a grid key whose values are all numbers."""
        if self.trials is not None:
            return list(self.ranges.get(column, ()))
        return [key for key, values in self._axes(column).items() if all(_is_number(v) for v in values)]


@dataclass(frozen=True)
class Job:
    row: str
    column: Any
    seed: int
    point: dict[str, Any]
    overrides: tuple[str, ...]  # complete Hydra overrides of this run


@dataclass(frozen=True)
class Claim:
    """A named pairwise claim: row ``a`` against row ``b`` in every column, with an equivalence margin (points)."""

    a: str
    b: str
    question: str
    margin: float | None = None


@dataclass(frozen=True)
class Compare:
    """Which rows the claim section compares: the method's rows against the baselines (some without warm-up)."""

    method: tuple[str, ...]
    baselines: tuple[str, ...]
    no_warmup: tuple[str, ...]


@dataclass
class Spec:
    name: str
    title: str
    claim: str
    base: tuple[str, ...]
    column_key: str
    columns: list[Any]
    seeds: list[int]
    metric: str
    rows: list[Row]
    notes: str = ""
    smoke: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)
    confirm_seeds: list[int] = field(default_factory=list)
    compare: Compare | None = None
    claims: tuple[Claim, ...] = ()
    chance: float | None = None  # chance-level accuracy (%) when the runs do not record num_classes
    profile: str = "full"  # full | smoke (smoke tables and figures say so in their titles)
    kind: str = "table"  # table | scaling
    target: tuple[str, float] | None = None  # kind scaling: (target.metric, target.value) from the base overrides
    select_on: str = "val"  # val | test: the split whose metric chooses each cell's point
    reuse_search_seeds: bool = False  # confirm_seeds may include search seeds (older records)
    min_steps: int = MIN_STEPS
    min_warmup_steps: int = MIN_WARMUP_STEPS
    sweep: str | None = None  # kind lr_window: the swept key (each row's only grid key)
    window_tolerance: float = WINDOW_TOLERANCE  # kind lr_window: points below the row's best that stay in the window
    discussion: str = ""  # the reading of the results (RUN.md); quotes no number the spec does not hold

    @property
    def selection_metric(self) -> str:
        """The summary field that chooses each cell's point: ``metric`` on the ``select_on`` split."""
        return self.metric.replace("_test_", f"_{self.select_on}_", 1)

    def _job(self, row: Row, column: Any, point: dict[str, Any], seed: int) -> Job:
        overrides = (*self.base, *row.overrides, f"{self.column_key}={column}",
                     *(f"{k}={v}" for k, v in point.items()), f"seed={seed}")
        return Job(row.label, column, seed, point, overrides)

    def jobs(self) -> list[Job]:
        """Every search-phase run of the table: rows × columns × grid points (or trials) × seeds."""
        return [self._job(row, column, point, seed) for row in self.rows for column in self.columns
                for point in row.points(column) for seed in self.seeds]

    def confirm_jobs(self, chosen: dict[tuple[str, Any], dict[str, Any]]) -> list[Job]:
        """The confirmation runs: each cell's chosen point (``chosen[(row, column)]``) with every confirm seed."""
        rows = {row.label: row for row in self.rows}
        return [self._job(rows[label], column, point, seed) for (label, column), point in chosen.items()
                for seed in self.confirm_seeds]

    def budget(self, row: Row) -> int:
        """Grid points (or search trials) per cell: the tuning budget, equal for every row and column (checked)."""
        return len(row.points(self.columns[0]))

    def runs_per_cell(self, row: Row) -> int:
        """Runs per cell: points × seeds, plus the confirmation seeds that the search did not already run."""
        return self.budget(row) * len(self.seeds) + len(set(self.confirm_seeds) - set(self.seeds))

    @property
    def reported_seeds(self) -> list[int]:
        """The seeds whose runs the table reports: the confirmation seeds when given, else the search seeds."""
        return self.confirm_seeds or self.seeds

    @property
    def display_title(self) -> str:
        """The title, marked ``[smoke]`` for the smoke profile."""
        return f"{self.title} [smoke]" if self.profile == "smoke" else self.title


def slug(text: str) -> str:
    """``"LARS + warm-up"`` → ``"lars-warm-up"`` (file- and URL-safe)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _fail(spec: str, message: str) -> UserError:
    return UserError(f"experiment spec {spec}: {message}")


def _round(value: float) -> float:
    """``value`` to :data:`SIGNIFICANT_DIGITS` significant digits (0.012345 → 0.0123)."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _dimension(name: str, where: str, key: str, raw: Any) -> Any:
    """A checked search dimension: ``("log"|"linear", lo, hi)`` or a list of choices."""
    if isinstance(raw, list):
        if not raw:
            raise _fail(name, f"{where}: space {key} has an empty list of choices")
        return list(raw)
    kind = next(iter(raw)) if isinstance(raw, dict) and len(raw) == 1 else None
    bounds = raw.get(kind) if kind in _DISTRIBUTIONS else None
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int | float) for b in bounds)
            and bounds[0] < bounds[1] and (kind == "linear" or bounds[0] > 0)):
        raise _fail(name, f"{where}: space {key} must be {{log: [lo, hi]}} (0 < lo < hi), {{linear: [lo, hi]}} "
                          f"(lo < hi), a list of choices, or a {{column: ...}} map of those (got {raw!r})")
    return (kind, float(bounds[0]), float(bounds[1]))


def _value(dimension: Any, u: float) -> Any:
    """The unit-interval coordinate ``u`` mapped into one dimension of the space."""
    if isinstance(dimension, list):
        return dimension[min(int(u * len(dimension)), len(dimension) - 1)]
    kind, lo, hi = dimension
    return _round(lo * (hi / lo) ** u if kind == "log" else lo + (hi - lo) * u)


def sobol_points(count: int, dimensions: int, seed: int) -> list[list[float]]:
    """The first ``count`` points of a scrambled Sobol sequence in ``[0, 1)^dimensions`` (deterministic in seed)."""
    sampler = qmc.Sobol(d=max(dimensions, 1), scramble=True, rng=seed)
    with warnings.catch_warnings():  # balance is best at powers of two; any count is still a valid design
        warnings.filterwarnings("ignore", message=".*balance properties.*")
        return sampler.random(count).tolist()


def _search_trials(name: str, label: str, columns: list[Any],
                   raw: Any) -> tuple[dict[Any, list[dict[str, Any]]], dict[Any, tuple[str, ...]]]:
    """The trial points per column, and per column the keys drawn from a range (not from a list of choices)."""
    where = f"row {label!r}"
    if not isinstance(raw, dict) or set(raw) - _SEARCH_KEYS or not raw.get("space"):
        raise _fail(name, f"{where}: search must be {{trials: N, space: {{key: ...}}}} with optional seed "
                          f"(got {raw!r})")
    trials = raw.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise _fail(name, f"{where}: search.trials must be a positive integer (got {trials!r})")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _fail(name, f"{where}: search.seed must be an integer (got {seed!r})")
    space = dict(raw["space"])
    per_column: dict[Any, dict[str, Any]] = {c: {} for c in columns}
    for key, spec in space.items():
        by_column = isinstance(spec, dict) and bool(set(spec) & set(columns))
        for column in columns:
            if by_column and column not in spec:
                raise _fail(name, f"{where}: space {key} has no range for {column} (give every column)")
            per_column[column][key] = _dimension(name, where, key, spec[column] if by_column else spec)
    units = sobol_points(trials, len(space), zlib.crc32(name.encode()) + seed)
    out = {}
    for column, dims in per_column.items():
        points = [{key: _value(dim, u[i]) for i, (key, dim) in enumerate(dims.items())} for u in units]
        if len({tuple(p.values()) for p in points}) < len(points):
            raise _fail(name, f"{where}: {trials} search trials at {column} include duplicate points (the space is "
                              "too small for that many distinct trials); widen the space or lower search.trials")
        out[column] = points
    ranges = {column: tuple(key for key, dim in dims.items() if not isinstance(dim, list))
              for column, dims in per_column.items()}
    return out, ranges


def _check_row(name: str, columns: list[Any], raw: Any) -> Row:
    if not isinstance(raw, dict) or not raw.get("label"):
        raise _fail(name, f"every row needs a label (got {raw!r})")
    unknown = set(raw) - _ROW_KEYS
    if unknown:
        raise _fail(name, f"row {raw['label']!r} has unknown key {sorted(unknown)[0]!r} (allowed: {sorted(_ROW_KEYS)})")
    if raw.get("grid") and raw.get("search"):
        raise _fail(name, f"row {raw['label']!r} gives both a grid and a search; keep one")
    grid = dict(raw.get("grid") or {})
    for key, values in grid.items():
        per_column = values if isinstance(values, dict) else {c: values for c in columns}
        for column in columns:
            got = per_column.get(column)
            if not isinstance(got, list) or not got:
                raise _fail(name, f"row {raw['label']!r}: grid {key} has no values for {column} "
                                  "(give a non-empty list, or a {column: list} map covering every column)")
    overrides = tuple(raw.get("overrides") or ())
    if "search" not in raw:
        return Row(str(raw["label"]), overrides, grid)
    return Row(str(raw["label"]), overrides, grid, *_search_trials(name, str(raw["label"]), columns, raw["search"]))


def _check_budgets(name: str, columns: list[Any], rows: list[Row]) -> None:
    """Every row must have the same number of points (grid points or search trials) in every column."""
    for column in columns:
        budgets = {row.label: len(row.points(column)) for row in rows}
        if len(set(budgets.values())) > 1:
            listing = ", ".join(f"{label} {n}" for label, n in budgets.items())
            raise _fail(name, f"unequal tuning budgets at {column} ({listing} points per cell): a row tuned more is "
                              "favoured; give every row the same number of grid points or search trials")


def _check_compare(name: str, labels: list[str], raw: Any) -> Compare | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - _COMPARE_KEYS or not raw.get("method"):
        raise _fail(name, "compare must be {method: [labels], baselines: [labels], no_warmup: [labels]} "
                          f"(baselines and no_warmup optional; got {raw!r})")
    groups = {key: [str(v) for v in raw.get(key) or []] for key in _COMPARE_KEYS}
    for key, values in groups.items():
        unknown = [v for v in values if v not in labels]
        if unknown:
            raise _fail(name, f"compare.{key} names {unknown[0]!r}, not a row label (rows: {', '.join(labels)})")
    baselines = groups["baselines"] or [label for label in labels if label not in groups["method"]]
    if set(baselines) & set(groups["method"]) or not set(groups["no_warmup"]) <= set(baselines):
        raise _fail(name, "compare: the method rows must not be baselines, and no_warmup must list baselines only")
    return Compare(tuple(groups["method"]), tuple(baselines), tuple(groups["no_warmup"]))


def _check_claims(name: str, labels: list[str], raw: Any) -> tuple[Claim, ...]:
    shape = "claims must be a list of {a: <row label>, b: <row label>, question: <text>, margin: <points, optional>}"
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail(name, f"{shape} (got {raw!r})")
    claims = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - _CLAIM_KEYS or not {"a", "b", "question"} <= set(item):
            raise _fail(name, f"{shape} (got {item!r})")
        a, b, question, margin = str(item["a"]), str(item["b"]), item["question"], item.get("margin")
        for label in (a, b):
            if label not in labels:
                raise _fail(name, f"claims name {label!r}, not a row label (rows: {', '.join(labels)})")
        if a == b:
            raise _fail(name, f"claim {question!r} compares row {a!r} with itself")
        if not isinstance(question, str) or not question.strip():
            raise _fail(name, f"claim {a!r} vs {b!r}: question must be a non-empty text (got {question!r})")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | float) or margin <= 0):
            raise _fail(name, f"claim {a!r} vs {b!r}: margin must be a positive number of points (got {margin!r})")
        claims.append(Claim(a, b, question.strip(), None if margin is None else float(margin)))
    return tuple(claims)


def _seeds(name: str, key: str, raw: Any) -> list[int]:
    if not isinstance(raw, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw) \
            or len(set(raw)) != len(raw):
        raise _fail(name, f"{key} must be a list of distinct integers (got {raw!r})")
    return list(raw)


def _assignments(overrides: Any) -> dict[str, str]:
    """``key=value`` overrides as ``{key: value}`` (``+``/``++``/``~`` prefixes dropped; group choices included)."""
    pairs = (str(o).split("=", 1) for o in overrides or () if "=" in str(o))
    return {key.lstrip("+~"): value for key, value in pairs}


def _target(overrides: Any) -> tuple[str, float] | None:
    """``(target.metric, target.value)`` as the last of ``overrides`` set them, or ``None`` if either is unset."""
    assigned = _assignments(overrides)
    try:
        value = float(assigned["target.value"])
    except (KeyError, ValueError):
        return None
    metric = assigned.get("target.metric")
    return (metric, value) if metric and math.isfinite(value) else None


def _scaling_target(name: str, raw: dict[str, Any], rows: list[Row]) -> tuple[str, float]:
    """Check a ``kind: scaling`` spec; returns its target ``(metric, value)`` from the base overrides."""
    if raw["columns"]["key"] != "batch_size":
        raise _fail(name, f"kind scaling plots steps to target against the batch size, so columns.key must be "
                          f"batch_size (got {raw['columns']['key']!r})")
    if raw.get("metric", SCALING_METRIC) != SCALING_METRIC:
        raise _fail(name, f"the metric of kind scaling is {SCALING_METRIC} (got {raw['metric']!r}); drop metric")
    for key in ("compare", "claims", "chance"):
        if raw.get(key) is not None:
            raise _fail(name, f"{key} applies to accuracy tables, not to kind scaling; remove it (or set it to null)")
    target = _target(raw.get("base"))
    if target is None:
        raise _fail(name, "kind scaling measures steps to a target: add target.metric=<metric> and "
                          "target.value=<number> to base (e.g. target.metric=test_top1, target.value=86)")
    for row in rows:
        keys = [*_assignments(row.overrides), *row.grid, *(row.trials[raw["columns"]["values"][0]][0]
                                                         if row.trials else ())]
        if any(key.startswith("target.") for key in keys):
            raise _fail(name, f"row {row.label!r} sets {next(k for k in keys if k.startswith('target.'))}: every "
                              "cell of a scaling table has the same target; set target.* in base only")
    return target


def _lr_window(name: str, raw: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    """Check a ``kind: lr_window`` spec; returns its ``sweep`` and ``window_tolerance``."""
    sweep, columns = raw.get("sweep"), raw["columns"]
    if not isinstance(sweep, str) or not sweep:
        raise _fail(name, f"kind lr_window needs sweep: <config key> (the swept key, e.g. optimizer.lr; got {sweep!r})")
    if len(columns["values"]) != 1 or columns["key"] == sweep:
        raise _fail(name, f"kind lr_window measures one window per row at one setting: give columns one value of "
                          f"another key than {sweep} (e.g. {{key: batch_size, values: [4096]}}; got {columns!r})")
    for key, why in (("confirm_seeds", "every swept value is reported, nothing is selected"),
                     ("metric", f"the window is on {WINDOW_METRIC}, test top-1 is reported beside it"),
                     ("chance", "no cell is compared with chance level")):
        if raw.get(key):
            raise _fail(name, f"{key} does not apply to kind lr_window ({why}); remove it")
    if raw.get("select_on", SPLITS[0]) != "val":
        raise _fail(name, f"kind lr_window's window is on validation ({WINDOW_METRIC}); drop select_on")
    tolerance = raw.get("window_tolerance", WINDOW_TOLERANCE)
    if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not 0 < tolerance < 100:
        raise _fail(name, f"window_tolerance must be a number of accuracy points in (0, 100) (got {tolerance!r})")
    column = columns["values"][0]
    for row in rows:
        where = f"row {row.label!r}"
        if row.trials is not None or set(row.grid) != {sweep}:
            raise _fail(name, f"{where}: kind lr_window sweeps {sweep} alone, so the row needs grid: {{{sweep}: "
                              f"[values]}} and nothing else (got {sorted(row.grid) or 'a search'})")
        if sweep in _assignments(row.overrides):
            raise _fail(name, f"{where} sets {sweep} in its overrides; give its values in the grid only")
        values = [p[sweep] for p in row.points(column)]
        if len(values) < 2 or len(set(values)) < len(values) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values):
            raise _fail(name, f"{where}: the values of {sweep} must be at least 2 distinct numbers > 0 (a log axis; "
                              f"got {values})")
    return {"sweep": sweep, "window_tolerance": float(tolerance)}


def _protocol(name: str, raw: dict[str, Any], kind: str, metric: str) -> dict[str, Any]:
    """The spec's selection protocol keys, checked: ``select_on``, ``reuse_search_seeds``, ``min_steps``,
    ``min_warmup_steps``."""
    select_on = raw.get("select_on", SPLITS[0])
    if select_on not in SPLITS:
        raise _fail(name, f"select_on must be one of {SPLITS} (got {select_on!r})")
    if kind == "table" and select_on == "val" and metric.startswith("best_"):
        raise _fail(name, f"metric {metric} reports the best test epoch, which is chosen on test; use "
                          "final_test_top1 (chosen on validation), or select_on: test")
    reuse = raw.get("reuse_search_seeds", False)
    if not isinstance(reuse, bool):
        raise _fail(name, f"reuse_search_seeds must be true or false (got {reuse!r})")
    out = {"select_on": select_on, "reuse_search_seeds": reuse}
    for key, default in (("min_steps", MIN_STEPS), ("min_warmup_steps", MIN_WARMUP_STEPS)):
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _fail(name, f"{key} must be an integer >= 0 (got {value!r})")
        out[key] = value
    return out


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """A YAML parser's multi-line message as ``<path>:<line>:<column>: <problem> (<context>)``; an error without a
    position in the text (bytes that are not UTF-8 text) as ``<path>: <message>``."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or problem is None:
        return f"{path}: " + " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}: {problem}" + (f" ({context})" if context else "")


def _numbers(value: Any) -> set[float]:
    """Every number in a spec value: numbers themselves, and the numbers written in its strings (:data:`_NUMBER`),
    through lists and mappings (keys included)."""
    if isinstance(value, bool) or value is None:
        return set()
    if isinstance(value, int | float):
        return {abs(float(value))}
    if isinstance(value, dict):
        return set().union(*(_numbers(k) | _numbers(v) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return set().union(*(_numbers(v) for v in value))
    return {float(match) for match in _NUMBER.findall(str(value))}


def _discussion(name: str, raw: dict[str, Any]) -> str:
    """The spec's ``discussion``, checked: every number it quotes is a number of the spec's other keys (a design
    value); a measured number belongs in the generated table or RUN.md, which the discussion points to."""
    text = raw.get("discussion") or ""
    if not isinstance(text, str):
        raise _fail(name, f"discussion must be a text (got {text!r})")
    design = _numbers({key: value for key, value in raw.items() if key != "discussion"})
    quoted = [m for m in _NUMBER.findall(text) if float(m) not in design]
    if quoted:
        raise _fail(name, f"discussion quotes {', '.join(dict.fromkeys(quoted))}, not a number of the spec (its base, "
                          "columns, seeds, rows, notes...): measured numbers are generated in the table and RUN.md; "
                          "point to them instead of quoting them")
    return text.strip()


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise UserError(_yaml_error(path, exc)) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
    if not isinstance(raw, dict):
        raise _fail(path.stem, "must be a mapping of keys")
    return raw


def load_spec(name_or_path: str | Path) -> Spec:
    """Load and validate ``tvlars/experiments/<name>.yaml`` (or a path); errors name the key and the fix."""
    path = Path(name_or_path)
    if not path.suffix:
        path = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")))
        raise UserError(f"no experiment spec {path}; known tables: {known}")
    raw = _read(path)
    name = path.stem
    if "extends" in raw:
        parent = EXPERIMENTS_DIR / f"{raw['extends']}.yaml"
        if not parent.is_file():
            raise _fail(name, f"extends unknown spec {raw['extends']!r}")
        raw = {**{k: v for k, v in _read(parent).items() if k not in ("extends", "discussion")}, **raw}
        del raw["extends"]
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise _fail(name, f"unknown key {sorted(unknown)[0]!r} (allowed: {sorted(_SPEC_KEYS)})")
    for key in ("title", "columns", "seeds", "rows"):
        if not raw.get(key):
            raise _fail(name, f"missing or empty {key!r}")
    columns = raw["columns"]
    if not isinstance(columns, dict) or not columns.get("key") or not columns.get("values"):
        raise _fail(name, "columns must be {key: <config key>, values: [..]}")
    kind = raw.get("kind", "table")
    if kind not in KINDS:
        raise _fail(name, f"kind must be one of {KINDS} (got {kind!r})")
    metric = WINDOW_METRIC if kind == "lr_window" else raw.get("metric", SCALING_METRIC if kind == "scaling"
                                                                 else METRICS[0])
    if kind != "lr_window" and ("sweep" in raw or "window_tolerance" in raw):
        raise _fail(name, "sweep and window_tolerance belong to kind lr_window; remove them or set kind: lr_window")
    if kind == "table" and metric not in METRICS:
        raise _fail(name, f"metric must be one of {METRICS} (got {metric!r})")
    protocol = _protocol(name, raw, kind, metric)
    chance = raw.get("chance")
    if chance is not None and (not isinstance(chance, int | float) or isinstance(chance, bool)
                               or not 0 < chance < 100):
        raise _fail(name, f"chance must be the chance-level accuracy in % (0 < chance < 100; got {chance!r})")
    rows = [_check_row(name, columns["values"], r) for r in raw["rows"]]
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise _fail(name, "row labels must be unique")
    _check_budgets(name, columns["values"], rows)
    target = _scaling_target(name, raw, rows) if kind == "scaling" else None
    window = _lr_window(name, raw, rows) if kind == "lr_window" else {}
    if target is not None and not target[0].startswith(f"{protocol['select_on']}_"):
        raise _fail(name, f"target.metric={target[0]} is not measured on the selection split "
                          f"(select_on: {protocol['select_on']}); use target.metric="
                          f"{protocol['select_on']}_{target[0].split('_', 1)[-1]}")
    seeds = _seeds(name, "seeds", raw["seeds"])
    confirm = _seeds(name, "confirm_seeds", raw.get("confirm_seeds") or [])
    if set(seeds) & set(confirm) and not protocol["reuse_search_seeds"]:
        raise _fail(name, f"confirm_seeds {confirm} include search seed(s) {sorted(set(seeds) & set(confirm))}: the "
                          "search run would be reported as its own confirmation; use seeds the search did not run "
                          f"(e.g. {list(range(max(seeds) + 1, max(seeds) + 1 + len(confirm)))})")
    return Spec(name=name, title=raw["title"], claim=raw.get("claim", ""), base=tuple(raw.get("base") or ()),
                column_key=columns["key"], columns=list(columns["values"]), seeds=seeds,
                metric=metric, rows=rows, notes=raw.get("notes", ""), smoke=tuple(raw.get("smoke") or ()), path=path,
                confirm_seeds=confirm, **protocol,
                compare=_check_compare(name, labels, raw.get("compare")),
                claims=_check_claims(name, labels, raw.get("claims")),
                chance=None if chance is None else float(chance), kind=kind, target=target,
                discussion=_discussion(name, raw), **window)


def smoke_spec(spec: Spec, data_root: str) -> Spec:
    """The same table shrunk to minutes: 1 seed, 2 small columns, the first grid point or trial (kind lr_window: the
    first two swept values), 1 epoch, a tiny model, no confirmation runs, and the spec's own ``smoke`` overrides
    (e.g. fake data under ``data_root``)."""
    small = [16, 32][: len(spec.columns)] if spec.column_key == "batch_size" else spec.columns[:2]
    column_map = dict(zip(spec.columns, small, strict=False))
    rows = []
    kept = 2 if spec.kind == "lr_window" else 1
    for row in spec.rows:
        points = row.points(spec.columns[0])[:kept]
        rows.append(Row(row.label, row.overrides, {key: [p[key] for p in points] for key in points[0]}))
    shrink = ("epochs=1", "model.width=0.0625", f"dataset.val_size={16 if spec.select_on == 'val' else 0}",
              "train_subset=64", "test_subset=32",
              "eval_batch_size=32", "precise_bn_images=32",
              "logger=none", f"data_root={data_root}", "checkpoint_every=1",
              *(() if spec.column_key == "batch_size" else ("batch_size=16",)))
    return Spec(name=spec.name, title=spec.title, claim=spec.claim, base=(*spec.base, *shrink, *spec.smoke),
                column_key=spec.column_key, columns=list(column_map.values()), seeds=spec.seeds[:1],
                metric=spec.metric, rows=rows, notes=spec.notes, smoke=spec.smoke, path=spec.path,
                compare=spec.compare, claims=spec.claims, chance=spec.chance, profile="smoke", kind=spec.kind,
                target=_target((*spec.base, *spec.smoke)) if spec.kind == "scaling" else None,
                select_on=spec.select_on, reuse_search_seeds=spec.reuse_search_seeds, min_steps=0, min_warmup_steps=0,
                sweep=spec.sweep, window_tolerance=spec.window_tolerance)
