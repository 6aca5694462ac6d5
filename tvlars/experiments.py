"""Experiment specs (``experiments/<table>.yaml``): one paper table as a grid, a selection rule and a layout.

A spec expands into jobs (one training run each); jobs become Hydra configs that one ``--multirun`` sweeps
with any launcher; the report code turns the runs' ``summary.json`` records back into the table.

Spec keys::

    name, title, claim      table id (= file name), caption, the paper's claim this table tests
    base                    Hydra overrides shared by every job (e.g. [dataset=cifar10, model=resnet18])
    columns                 {key: batch_size, values: [512, 1024, ...]}  (the table's columns)
    seeds                   [0, 1, ...]
    metric                  best_test_top1 | final_test_top1 (selection and reported value)
    rows                    [{label, overrides: [...], grid: {key: [v...] | {column: [v...]}}}]
    notes                   free text printed under the table
    smoke                   extra overrides for --profile smoke (e.g. dataset.verify_checksums=false)
    extends                 another spec whose keys this one inherits (top-level keys replace, not merge)

Per row and column the grid is the Cartesian product of its keys' values (a dict gives per-column values).
Selection: for each row × column, the grid point with the best mean ``metric`` over seeds; the table shows
that mean ± std over seeds and the chosen grid values.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tvlars.errors import UserError

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
METRICS = ("best_test_top1", "final_test_top1")
_SPEC_KEYS = {"name", "title", "claim", "base", "columns", "seeds", "metric", "rows", "notes", "smoke", "extends"}
_ROW_KEYS = {"label", "overrides", "grid"}


@dataclass(frozen=True)
class Row:
    label: str
    overrides: tuple[str, ...]
    grid: dict[str, Any]  # key -> list of values, or {column value: list of values}

    def points(self, column: Any) -> list[dict[str, Any]]:
        """The grid points (``{key: value}``) of this row at ``column``."""
        axes = {k: (v.get(column, []) if isinstance(v, dict) else v) for k, v in self.grid.items()}
        return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


@dataclass(frozen=True)
class Job:
    row: str
    column: Any
    seed: int
    point: dict[str, Any]
    overrides: tuple[str, ...]  # complete Hydra overrides of this run


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

    def jobs(self) -> list[Job]:
        """Every run of the table: rows × columns × grid points × seeds."""
        out = []
        for row in self.rows:
            for column in self.columns:
                for point in row.points(column):
                    for seed in self.seeds:
                        overrides = (*self.base, *row.overrides, f"{self.column_key}={column}",
                                     *(f"{k}={v}" for k, v in point.items()), f"seed={seed}")
                        out.append(Job(row.label, column, seed, point, overrides))
        return out

    def budget(self, row: Row) -> int:
        """Grid points per cell (the tuning budget), the same for every column by construction checks."""
        return len(row.points(self.columns[0]))


def slug(text: str) -> str:
    """``"LARS + warm-up"`` → ``"lars-warm-up"`` (file- and URL-safe)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _fail(spec: str, message: str) -> UserError:
    return UserError(f"experiment spec {spec}: {message}")


def _check_row(name: str, columns: list[Any], raw: Any) -> Row:
    if not isinstance(raw, dict) or not raw.get("label"):
        raise _fail(name, f"every row needs a label (got {raw!r})")
    unknown = set(raw) - _ROW_KEYS
    if unknown:
        raise _fail(name, f"row {raw['label']!r} has unknown key {sorted(unknown)[0]!r} (allowed: {sorted(_ROW_KEYS)})")
    grid = dict(raw.get("grid") or {})
    for key, values in grid.items():
        per_column = values if isinstance(values, dict) else {c: values for c in columns}
        for column in columns:
            got = per_column.get(column)
            if not isinstance(got, list) or not got:
                raise _fail(name, f"row {raw['label']!r}: grid {key} has no values for {column} "
                                  "(give a non-empty list, or a {column: list} map covering every column)")
    return Row(str(raw["label"]), tuple(raw.get("overrides") or ()), grid)


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise _fail(path.stem, f"is not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise _fail(path.stem, "must be a mapping of keys")
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
    metric = raw.get("metric", "best_test_top1")
    if metric not in METRICS:
        raise _fail(name, f"metric must be one of {METRICS} (got {metric!r})")
    rows = [_check_row(name, columns["values"], r) for r in raw["rows"]]
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise _fail(name, "row labels must be unique")
    return Spec(name=name, title=raw["title"], claim=raw.get("claim", ""), base=tuple(raw.get("base") or ()),
                column_key=columns["key"], columns=list(columns["values"]), seeds=list(raw["seeds"]),
                metric=metric, rows=rows, notes=raw.get("notes", ""), smoke=tuple(raw.get("smoke") or ()), path=path)


def smoke_spec(spec: Spec, data_root: str) -> Spec:
    """The same table shrunk to minutes: 1 seed, 2 small columns, the first grid point, 1 epoch, a tiny model,
    and the spec's own ``smoke`` overrides (e.g. fake data in the real on-disk format under ``data_root``)."""
    small = [16, 32][: len(spec.columns)] if spec.column_key == "batch_size" else spec.columns[:2]
    column_map = dict(zip(spec.columns, small, strict=False))
    rows = []
    for row in spec.rows:
        grid = {}
        for key, values in row.grid.items():
            first = values.get(spec.columns[0]) if isinstance(values, dict) else values
            grid[key] = [first[0]]
        rows.append(Row(row.label, row.overrides, grid))
    shrink = ("epochs=1", "model.width=0.0625", "train_subset=64", "test_subset=32", "eval_batch_size=32",
              "logger=none", f"data_root={data_root}", "checkpoint_every=1",
              *(() if spec.column_key == "batch_size" else ("batch_size=16",)))
    return Spec(name=spec.name, title=f"{spec.title} [smoke]", claim=spec.claim,
                base=(*spec.base, *shrink, *spec.smoke), column_key=spec.column_key,
                columns=list(column_map.values()), seeds=spec.seeds[:1], metric=spec.metric, rows=rows,
                notes=spec.notes, smoke=spec.smoke, path=spec.path)
