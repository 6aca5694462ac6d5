"""Experiment specs (``tvlars/experiments/<table>.yaml``): one table as a grid or search, a selection rule, a layout.

A spec expands into jobs (one training run each); jobs become Hydra configs that one ``--multirun`` sweeps
with any launcher; the report code turns the runs' ``summary.json`` records back into the table.

Spec keys::

    name, title, claim      table id (= file name), caption, the paper's claim this table tests
    kind                    table (default: accuracy per row × column) | scaling (steps to target against batch
                            size and the critical batch size, tvlars.report.scaling)
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
    chance                  chance-level accuracy in % (used when a run's summary has no num_classes)
    notes                   free text printed under the table
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
KINDS = ("table", "scaling")
SCALING_METRIC = "steps_to_target"  # the metric of kind scaling: fewest optimizer steps to the target
_SPEC_KEYS = {"name", "title", "claim", "kind", "base", "columns", "seeds", "confirm_seeds", "metric", "rows",
              "select_on", "reuse_search_seeds", "min_steps", "min_warmup_steps",
              "compare", "chance", "notes", "smoke", "extends"}
_ROW_KEYS = {"label", "overrides", "grid", "search"}
_SEARCH_KEYS = {"trials", "space", "seed"}
_COMPARE_KEYS = {"method", "baselines", "no_warmup"}
_DISTRIBUTIONS = ("log", "linear")
SIGNIFICANT_DIGITS = 3  # search values are rounded to this many significant digits (readable, stable run ids)


@dataclass(frozen=True)
class Row:
    label: str
    overrides: tuple[str, ...]
    grid: dict[str, Any]  # key -> list of values, or {column value: list of values}
    trials: dict[Any, list[dict[str, Any]]] | None = None  # search rows: column -> trial points, in trial order

    def points(self, column: Any) -> list[dict[str, Any]]:
        """The grid points or search trials (``{key: value}``) of this row at ``column``, in trial order."""
        if self.trials is not None:
            return [dict(p) for p in self.trials[column]]
        axes = {k: (v.get(column, []) if isinstance(v, dict) else v) for k, v in self.grid.items()}
        return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


@dataclass(frozen=True)
class Job:
    row: str
    column: Any
    seed: int
    point: dict[str, Any]
    overrides: tuple[str, ...]  # complete Hydra overrides of this run


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
    chance: float | None = None  # chance-level accuracy (%) when the runs do not record num_classes
    profile: str = "full"  # full | smoke (smoke tables and figures say so in their titles)
    kind: str = "table"  # table | scaling
    target: tuple[str, float] | None = None  # kind scaling: (target.metric, target.value) from the base overrides
    select_on: str = "val"  # val | test: the split whose metric chooses each cell's point
    reuse_search_seeds: bool = False  # confirm_seeds may include search seeds (older records)
    min_steps: int = MIN_STEPS
    min_warmup_steps: int = MIN_WARMUP_STEPS

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


def _search_trials(name: str, label: str, columns: list[Any], raw: Any) -> dict[Any, list[dict[str, Any]]]:
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
    return out


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
    trials = _search_trials(name, str(raw["label"]), columns, raw["search"]) if "search" in raw else None
    return Row(str(raw["label"]), tuple(raw.get("overrides") or ()), grid, trials)


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
    for key in ("compare", "chance"):
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
        raw = {**{k: v for k, v in _read(parent).items() if k != "extends"}, **raw}
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
    metric = raw.get("metric", SCALING_METRIC if kind == "scaling" else METRICS[0])
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
                chance=None if chance is None else float(chance), kind=kind, target=target)


def smoke_spec(spec: Spec, data_root: str) -> Spec:
    """The same table shrunk to minutes: 1 seed, 2 small columns, the first grid point or trial, 1 epoch, a tiny
    model, no confirmation runs, and the spec's own ``smoke`` overrides (e.g. fake data under ``data_root``)."""
    small = [16, 32][: len(spec.columns)] if spec.column_key == "batch_size" else spec.columns[:2]
    column_map = dict(zip(spec.columns, small, strict=False))
    rows = []
    for row in spec.rows:
        first = row.points(spec.columns[0])[0]
        rows.append(Row(row.label, row.overrides, {key: [value] for key, value in first.items()}))
    shrink = ("epochs=1", "model.width=0.0625", f"dataset.val_size={16 if spec.select_on == 'val' else 0}",
              "train_subset=64", "test_subset=32",
              "eval_batch_size=32", "precise_bn_images=32",
              "logger=none", f"data_root={data_root}", "checkpoint_every=1",
              *(() if spec.column_key == "batch_size" else ("batch_size=16",)))
    return Spec(name=spec.name, title=spec.title, claim=spec.claim, base=(*spec.base, *shrink, *spec.smoke),
                column_key=spec.column_key, columns=list(column_map.values()), seeds=spec.seeds[:1],
                metric=spec.metric, rows=rows, notes=spec.notes, smoke=spec.smoke, path=spec.path,
                compare=spec.compare, chance=spec.chance, profile="smoke", kind=spec.kind,
                target=_target((*spec.base, *spec.smoke)) if spec.kind == "scaling" else None,
                select_on=spec.select_on, reuse_search_seeds=spec.reuse_search_seeds, min_steps=0, min_warmup_steps=0)
