"""What a kind of table is (:class:`TableKind`) and what it builds (:class:`Table`).

Each kind is one instance of a :class:`TableKind` subclass, in its own module of this package, registered in
:data:`tvlars.tables.kinds.KINDS` under the name a spec's ``kind:`` gives. It owns everything that differs between
kinds: the spec keys only it takes, the selection of one cell from its runs, the files it writes, the figures it
draws and the fields a reproduction is compared on; the shared machinery is :mod:`tvlars.tables.cells` (finding a
cell's runs), :mod:`tvlars.tables.render` (the text), :mod:`tvlars.tables.figures` (drawing) and
:mod:`tvlars.tables.compare` (the comparison).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tvlars.tables.cells import select_cells
from tvlars.tables.compare import TABLE_FIELDS, compare
from tvlars.tables.design import Row, Spec
from tvlars.tables.instrument_figures import write_instrument_figures

Cells = dict[tuple[str, Any], Any]
"""A table's cells by (row label, column value); what a cell holds is the kind's."""


@dataclass
class Table:
    """A built table: its spec, its cells, the files it writes (name → text, the Markdown first) and the problems
    its records have (missing, failed, stray runs...)."""

    spec: Spec
    cells: Cells
    files: dict[str, str]
    problems: list[str]

    @property
    def markdown(self) -> str:
        """The table's Markdown file."""
        return next(iter(self.files.values()))


class TableKind(ABC):
    """One kind of table (see the module docstring)."""

    name: str  # a spec's ``kind:``
    metric: str  # the spec's ``metric`` when it gives none
    csv: str  # the file of its tables that a reproduction is compared with, cell by cell
    keys: tuple[str, ...] = ()  # spec keys that only this kind takes
    compare_fields: Mapping[str, str] = TABLE_FIELDS  # the CSV's headers of a cell's column, mean, std, seed count
    figure_files: tuple[str, ...] = ()  # every figure it may draw (a rebuild removes those its records no longer give)
    instruments: bool = True  # the instruments' figures and RUN.md summary (a row over all its runs) apply
    smoke_points: int = 1  # grid points or trials per row that the smoke profile keeps

    @abstractmethod
    def check(self, name: str, raw: Mapping[str, Any], rows: list[Row], select_on: str) -> dict[str, Any]:
        """The spec fields of this kind (``metric`` and its own keys) from the spec's keys ``raw``, its ``rows`` and
        the split it selects on; a spec this kind cannot build ends in one line (``design.spec_error``)."""

    def smoke(self, base: tuple[str, ...]) -> dict[str, Any]:
        """The spec fields of this kind that follow from the smoke profile's ``base`` overrides (none by default)."""
        return {}

    @abstractmethod
    def cell(self, spec: Spec, row: Row, column: Any, runs: pd.DataFrame) -> tuple[Any, list[str]]:
        """The cell of ``row`` × ``column`` from its runs, and the problems met."""

    def select(self, spec: Spec, df: pd.DataFrame) -> tuple[Cells, list[str]]:
        """Every cell from the collected runs ``df``, and the problems met."""
        return select_cells(spec, df, self.cell)

    @abstractmethod
    def build(self, spec: Spec, df: pd.DataFrame) -> Table:
        """The table from the collected runs ``df``: its cells and rendered files."""

    @abstractmethod
    def figures(self, spec: Spec, table: Table, df: pd.DataFrame, out: Path) -> list[Path]:
        """The kind's figures that the records support, written into ``out``; returns their paths."""

    def draw(self, spec: Spec, table: Table, df: pd.DataFrame, out: str | Path) -> list[Path]:
        """Every figure of the table that its records support, written into ``out``: the kind's, then the
        instruments' where they apply."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        own = self.figures(spec, table, df, out)
        return [*own, *(write_instrument_figures(spec, df, out) if self.instruments else [])]

    def compare(self, committed_csv: str, table: Table) -> str:
        """A reproduction's ``table`` against the committed :attr:`csv`, cell by cell (:func:`compare`)."""
        return compare(committed_csv, table.spec, table.cells, self.compare_fields)
