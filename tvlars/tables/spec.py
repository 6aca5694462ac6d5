"""Experiment specs (``experiments/<table>.yaml``): one table as a grid or search, a selection rule, a layout.

A spec expands into jobs (one training run each, :mod:`tvlars.tables.design`); jobs become Hydra configs that one
``--multirun`` sweeps with any launcher; its kind (:mod:`tvlars.tables.kinds`) turns the runs' ``summary.json``
records back into the table.

Spec keys::

    name, title, claim      table id (= file name), caption, the paper's claim this table tests
    kind                    table (default: accuracy per row × column, tvlars.tables.kinds.accuracy) | scaling (steps
                            to target against batch size and the critical batch size, tvlars.tables.kinds.scaling) |
                            lr_window (accuracy against one swept key per row, and each row's stable window of it,
                            tvlars.tables.kinds.lr_window); the kind checks its own keys below
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
                            test (TOST) within ± margin points (tvlars.tables.kinds.accuracy)
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

import dataclasses
import re
import warnings
import zlib
from pathlib import Path
from typing import Any

import yaml
from scipy.stats import qmc

from tvlars.errors import UserError
from tvlars.paths import EXPERIMENTS_DIR
from tvlars.tables.design import MIN_STEPS, MIN_WARMUP_STEPS, Claim, Compare, Row, Spec, spec_error
from tvlars.tables.kinds import KINDS

SPLITS = ("val", "test")  # where a spec selects (select_on)
_SPEC_KEYS = {"name", "title", "claim", "kind", "base", "columns", "seeds", "confirm_seeds", "metric", "rows",
              "select_on", "reuse_search_seeds", "min_steps", "min_warmup_steps", "compare", "claims", "chance",
              "notes", "smoke", "extends", "discussion", *(key for kind in KINDS.values() for key in kind.keys)}
_ROW_KEYS = {"label", "overrides", "grid", "search"}
_SEARCH_KEYS = {"trials", "space", "seed"}
_COMPARE_KEYS = {"method", "baselines", "no_warmup"}
_CLAIM_KEYS = {"a", "b", "question", "margin"}
_DISTRIBUTIONS = ("log", "linear")
SIGNIFICANT_DIGITS = 3  # search values are rounded to this many significant digits (readable, stable run ids)
# A number in prose: not part of a name (CIFAR-10, top-1, ResNet-18, log10, v2), optionally decimal or in e-notation.
_NUMBER = re.compile(r"(?<![\w.])(?<![^\W\d_]-)\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _round(value: float) -> float:
    """``value`` to :data:`SIGNIFICANT_DIGITS` significant digits (0.012345 → 0.0123)."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _dimension(name: str, where: str, key: str, raw: Any) -> Any:
    """A checked search dimension: ``("log"|"linear", lo, hi)`` or a list of choices."""
    if isinstance(raw, list):
        if not raw:
            raise spec_error(name, f"{where}: space {key} has an empty list of choices")
        return list(raw)
    kind = next(iter(raw)) if isinstance(raw, dict) and len(raw) == 1 else None
    bounds = raw.get(kind) if kind in _DISTRIBUTIONS else None
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int | float) for b in bounds)
            and bounds[0] < bounds[1] and (kind == "linear" or bounds[0] > 0)):
        raise spec_error(name, f"{where}: space {key} must be {{log: [lo, hi]}} (0 < lo < hi), {{linear: [lo, hi]}} "
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
        raise spec_error(name, f"{where}: search must be {{trials: N, space: {{key: ...}}}} with optional seed "
                               f"(got {raw!r})")
    trials = raw.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise spec_error(name, f"{where}: search.trials must be a positive integer (got {trials!r})")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise spec_error(name, f"{where}: search.seed must be an integer (got {seed!r})")
    space = dict(raw["space"])
    per_column: dict[Any, dict[str, Any]] = {c: {} for c in columns}
    for key, spec in space.items():
        by_column = isinstance(spec, dict) and bool(set(spec) & set(columns))
        for column in columns:
            if by_column and column not in spec:
                raise spec_error(name, f"{where}: space {key} has no range for {column} (give every column)")
            per_column[column][key] = _dimension(name, where, key, spec[column] if by_column else spec)
    units = sobol_points(trials, len(space), zlib.crc32(name.encode()) + seed)
    out = {}
    for column, dims in per_column.items():
        points = [{key: _value(dim, u[i]) for i, (key, dim) in enumerate(dims.items())} for u in units]
        if len({tuple(p.values()) for p in points}) < len(points):
            raise spec_error(name, f"{where}: {trials} search trials at {column} include duplicate points (the space "
                                   "is too small for that many distinct trials); widen the space or lower "
                                   "search.trials")
        out[column] = points
    ranges = {column: tuple(key for key, dim in dims.items() if not isinstance(dim, list))
              for column, dims in per_column.items()}
    return out, ranges


def _check_row(name: str, columns: list[Any], raw: Any) -> Row:
    if not isinstance(raw, dict) or not raw.get("label"):
        raise spec_error(name, f"every row needs a label (got {raw!r})")
    unknown = set(raw) - _ROW_KEYS
    if unknown:
        raise spec_error(name, f"row {raw['label']!r} has unknown key {sorted(unknown)[0]!r} (allowed: "
                               f"{sorted(_ROW_KEYS)})")
    if raw.get("grid") and raw.get("search"):
        raise spec_error(name, f"row {raw['label']!r} gives both a grid and a search; keep one")
    grid = dict(raw.get("grid") or {})
    for key, values in grid.items():
        per_column = values if isinstance(values, dict) else {c: values for c in columns}
        for column in columns:
            got = per_column.get(column)
            if not isinstance(got, list) or not got:
                raise spec_error(name, f"row {raw['label']!r}: grid {key} has no values for {column} "
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
            raise spec_error(name, f"unequal tuning budgets at {column} ({listing} points per cell): a row tuned more "
                                   "is favoured; give every row the same number of grid points or search trials")


def _check_compare(name: str, labels: list[str], raw: Any) -> Compare | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - _COMPARE_KEYS or not raw.get("method"):
        raise spec_error(name, "compare must be {method: [labels], baselines: [labels], no_warmup: [labels]} "
                               f"(baselines and no_warmup optional; got {raw!r})")
    groups = {key: [str(v) for v in raw.get(key) or []] for key in _COMPARE_KEYS}
    for key, values in groups.items():
        unknown = [v for v in values if v not in labels]
        if unknown:
            raise spec_error(name, f"compare.{key} names {unknown[0]!r}, not a row label (rows: {', '.join(labels)})")
    baselines = groups["baselines"] or [label for label in labels if label not in groups["method"]]
    if set(baselines) & set(groups["method"]) or not set(groups["no_warmup"]) <= set(baselines):
        raise spec_error(name, "compare: the method rows must not be baselines, and no_warmup must list baselines only")
    return Compare(tuple(groups["method"]), tuple(baselines), tuple(groups["no_warmup"]))


def _check_claims(name: str, labels: list[str], raw: Any) -> tuple[Claim, ...]:
    shape = "claims must be a list of {a: <row label>, b: <row label>, question: <text>, margin: <points, optional>}"
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise spec_error(name, f"{shape} (got {raw!r})")
    claims = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - _CLAIM_KEYS or not {"a", "b", "question"} <= set(item):
            raise spec_error(name, f"{shape} (got {item!r})")
        a, b, question, margin = str(item["a"]), str(item["b"]), item["question"], item.get("margin")
        for label in (a, b):
            if label not in labels:
                raise spec_error(name, f"claims name {label!r}, not a row label (rows: {', '.join(labels)})")
        if a == b:
            raise spec_error(name, f"claim {question!r} compares row {a!r} with itself")
        if not isinstance(question, str) or not question.strip():
            raise spec_error(name, f"claim {a!r} vs {b!r}: question must be a non-empty text (got {question!r})")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | float) or margin <= 0):
            raise spec_error(name, f"claim {a!r} vs {b!r}: margin must be a positive number of points (got {margin!r})")
        claims.append(Claim(a, b, question.strip(), None if margin is None else float(margin)))
    return tuple(claims)


def _seeds(name: str, key: str, raw: Any) -> list[int]:
    if not isinstance(raw, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw) \
            or len(set(raw)) != len(raw):
        raise spec_error(name, f"{key} must be a list of distinct integers (got {raw!r})")
    return list(raw)


def _protocol(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The spec's selection protocol keys, checked: ``select_on``, ``reuse_search_seeds``, ``min_steps``,
    ``min_warmup_steps``."""
    select_on = raw.get("select_on", SPLITS[0])
    if select_on not in SPLITS:
        raise spec_error(name, f"select_on must be one of {SPLITS} (got {select_on!r})")
    reuse = raw.get("reuse_search_seeds", False)
    if not isinstance(reuse, bool):
        raise spec_error(name, f"reuse_search_seeds must be true or false (got {reuse!r})")
    out = {"select_on": select_on, "reuse_search_seeds": reuse}
    for key, default in (("min_steps", MIN_STEPS), ("min_warmup_steps", MIN_WARMUP_STEPS)):
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise spec_error(name, f"{key} must be an integer >= 0 (got {value!r})")
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
        raise spec_error(name, f"discussion must be a text (got {text!r})")
    design = _numbers({key: value for key, value in raw.items() if key != "discussion"})
    quoted = [m for m in _NUMBER.findall(text) if float(m) not in design]
    if quoted:
        raise spec_error(name, f"discussion quotes {', '.join(dict.fromkeys(quoted))}, not a number of the spec (its "
                               "base, columns, seeds, rows, notes...): measured numbers are generated in the table and "
                               "RUN.md; point to them instead of quoting them")
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
        raise spec_error(path.stem, "must be a mapping of keys")
    return raw


def load_spec(name_or_path: str | Path) -> Spec:
    """Load and validate ``experiments/<name>.yaml`` (or a path); errors name the key and the fix."""
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
            raise spec_error(name, f"extends unknown spec {raw['extends']!r}")
        raw = {**{k: v for k, v in _read(parent).items() if k not in ("extends", "discussion")}, **raw}
        del raw["extends"]
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise spec_error(name, f"unknown key {sorted(unknown)[0]!r} (allowed: {sorted(_SPEC_KEYS)})")
    for key in ("title", "columns", "seeds", "rows"):
        if not raw.get(key):
            raise spec_error(name, f"missing or empty {key!r}")
    columns = raw["columns"]
    if not isinstance(columns, dict) or not columns.get("key") or not columns.get("values"):
        raise spec_error(name, "columns must be {key: <config key>, values: [..]}")
    kind = KINDS.get(raw.get("kind", next(iter(KINDS))))
    if kind is None:
        raise spec_error(name, f"kind must be one of {tuple(KINDS)} (got {raw['kind']!r})")
    for other in KINDS.values():
        if other is not kind and set(other.keys) & set(raw):
            raise spec_error(name, f"{' and '.join(other.keys)} belong to kind {other.name}; remove them or set kind: "
                                   f"{other.name}")
    protocol = _protocol(name, raw)
    chance = raw.get("chance")
    if chance is not None and (not isinstance(chance, int | float) or isinstance(chance, bool)
                               or not 0 < chance < 100):
        raise spec_error(name, f"chance must be the chance-level accuracy in % (0 < chance < 100; got {chance!r})")
    rows = [_check_row(name, columns["values"], r) for r in raw["rows"]]
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise spec_error(name, "row labels must be unique")
    _check_budgets(name, columns["values"], rows)
    fields = kind.check(name, raw, rows, protocol["select_on"])
    seeds = _seeds(name, "seeds", raw["seeds"])
    confirm = _seeds(name, "confirm_seeds", raw.get("confirm_seeds") or [])
    if set(seeds) & set(confirm) and not protocol["reuse_search_seeds"]:
        raise spec_error(name, f"confirm_seeds {confirm} include search seed(s) {sorted(set(seeds) & set(confirm))}: "
                               "the search run would be reported as its own confirmation; use seeds the search did not "
                               f"run (e.g. {list(range(max(seeds) + 1, max(seeds) + 1 + len(confirm)))})")
    return Spec(name=name, title=raw["title"], claim=raw.get("claim", ""), base=tuple(raw.get("base") or ()),
                column_key=columns["key"], columns=list(columns["values"]), seeds=seeds, rows=rows,
                notes=raw.get("notes", ""), smoke=tuple(raw.get("smoke") or ()), path=path, confirm_seeds=confirm,
                compare=_check_compare(name, labels, raw.get("compare")),
                claims=_check_claims(name, labels, raw.get("claims")),
                chance=None if chance is None else float(chance), kind=kind.name, discussion=_discussion(name, raw),
                **protocol, **fields)


def smoke_spec(spec: Spec, data_root: str) -> Spec:
    """The same table shrunk to minutes: 1 seed, 2 small columns, the first grid point or trial of each row (as many
    as its kind keeps), 1 epoch, a tiny model, no confirmation runs, no step minimums, and the spec's own ``smoke``
    overrides (e.g. fake data under ``data_root``)."""
    kind = KINDS[spec.kind]
    small = [16, 32][: len(spec.columns)] if spec.column_key == "batch_size" else spec.columns[:2]
    column_map = dict(zip(spec.columns, small, strict=False))
    rows = []
    for row in spec.rows:
        points = row.points(spec.columns[0])[:kind.smoke_points]
        rows.append(Row(row.label, row.overrides, {key: [p[key] for p in points] for key in points[0]}))
    shrink = ("epochs=1", "model.width=0.0625", f"dataset.val_size={16 if spec.select_on == 'val' else 0}",
              "train_subset=64", "test_subset=32",
              "eval_batch_size=32", "precise_bn_images=32",
              "logger=none", f"data_root={data_root}", "checkpoint_every=1",
              *(() if spec.column_key == "batch_size" else ("batch_size=16",)))
    base = (*spec.base, *shrink, *spec.smoke)
    return dataclasses.replace(spec, base=base, columns=list(column_map.values()), seeds=spec.seeds[:1], rows=rows,
                               confirm_seeds=[], discussion="", profile="smoke", min_steps=0, min_warmup_steps=0,
                               **kind.smoke(base))
