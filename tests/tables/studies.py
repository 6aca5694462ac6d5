"""What the table tests share: a spec written from its text, and a test module's ``spec`` and ``runs`` fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tvlars.tables.design import Spec
from tvlars.tables.spec import load_spec


def write_spec(directory: Path, text: str, name: str) -> Path:
    """An experiment spec ``text`` written as ``<directory>/<name>.yaml`` (its table's name); returns the path."""
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def study_fixtures(text: str, name: str, write_runs: Callable[[Path], Path]) -> tuple[Any, Any]:
    """A test module's ``spec`` and ``runs`` fixtures: the spec ``text`` loaded as ``<name>.yaml``, and the run
    records ``write_runs`` writes under ``runs/`` (``spec, runs = study_fixtures(...)`` at module level)."""

    @pytest.fixture
    def spec(tmp_path: Path) -> Spec:
        return load_spec(write_spec(tmp_path, text, name))

    @pytest.fixture
    def runs(tmp_path: Path) -> Path:
        return write_runs(tmp_path / "runs")

    return spec, runs
