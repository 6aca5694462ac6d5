"""A table's design as its experiment spec declares it (:mod:`tvlars.tables.spec` loads and checks one): rows ×
columns × grid points or search trials × seeds, the jobs it expands into, and what the claim section compares.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvlars.errors import UserError

MIN_STEPS = 50  # default min_steps: fewer optimizer steps cannot tell schedules apart
MIN_WARMUP_STEPS = 10  # default min_warmup_steps (tvlars.schedules.warmup_cosine.MIN_WARMUP_STEPS)


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
    """One table's design; ``kind`` names the :class:`~tvlars.tables.kinds.base.TableKind` that selects, renders and
    draws it, and the kind's own keys (``target``, ``sweep``, ``window_tolerance``) are ``None`` for other kinds."""

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
    kind: str = "table"  # a name of tvlars.tables.kinds.KINDS
    target: tuple[str, float] | None = None  # kind scaling: (target.metric, target.value) from the base overrides
    select_on: str = "val"  # val | test: the split whose metric chooses each cell's point
    reuse_search_seeds: bool = False  # confirm_seeds may include search seeds (older records)
    min_steps: int = MIN_STEPS
    min_warmup_steps: int = MIN_WARMUP_STEPS
    sweep: str | None = None  # kind lr_window: the swept key (each row's only grid key)
    window_tolerance: float | None = None  # kind lr_window: points below the row's best that stay in the window
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


def spec_error(spec: str, message: str) -> UserError:
    """The one line a spec that cannot be run ends in: its name and what to fix."""
    return UserError(f"experiment spec {spec}: {message}")


def assignments(overrides: Any) -> dict[str, str]:
    """``key=value`` overrides as ``{key: value}`` (``+``/``++``/``~`` prefixes dropped; group choices included)."""
    pairs = (str(o).split("=", 1) for o in overrides or () if "=" in str(o))
    return {key.lstrip("+~"): value for key, value in pairs}


def target_of(overrides: Any) -> tuple[str, float] | None:
    """``(target.metric, target.value)`` as the last of ``overrides`` set them, or ``None`` if either is unset."""
    assigned = assignments(overrides)
    try:
        value = float(assigned["target.value"])
    except (KeyError, ValueError):
        return None
    metric = assigned.get("target.metric")
    return (metric, value) if metric and math.isfinite(value) else None
