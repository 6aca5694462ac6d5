"""LR-window studies (spec kind: lr_window): the spec checks, the window rule on hand-computed scores,
lr_window.md/.csv and the figures from synthetic records, make_tables, the comparison, and a smoke reproduce."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tvlars.errors import UserError
from tvlars.spec import load_spec, smoke_spec

SPEC = """\
kind: lr_window
title: Fake LR window study
claim: A is at least as wide as B.
sweep: optimizer.lr
window_tolerance: 2
columns: {key: batch_size, values: [4096]}
seeds: [0, 1, 2]
compare: {method: [A]}
rows:
  - label: A
    overrides: [optimizer=lars]
    grid: {optimizer.lr: [1, 2, 4, 8, 16]}
  - label: B
    overrides: [optimizer=lars, schedule=warmup_cosine]
    grid: {optimizer.lr: [1, 2, 4, 8, 16]}
notes: Synthetic records.
"""


def write_spec(tmp_path: Path, text: str = SPEC, name: str = "win") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------- the spec
def test_the_spec_loads_with_its_sweep_and_tolerance(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path))
    assert spec.kind == "lr_window" and spec.sweep == "optimizer.lr" and spec.window_tolerance == 2.0
    assert spec.metric == "final_val_top1" and spec.select_on == "val"
    assert len(spec.jobs()) == 2 * 5 * 3 and spec.runs_per_cell(spec.rows[0]) == 15
    smoke = smoke_spec(spec, "/data")  # the first two swept values, one seed
    assert smoke.sweep == "optimizer.lr" and smoke.seeds == [0] and smoke.columns == [16]
    assert smoke.rows[0].points(16) == [{"optimizer.lr": 1}, {"optimizer.lr": 2}]


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda s: s.replace("sweep: optimizer.lr\n", ""), "kind lr_window needs sweep: <config key>"),
    (lambda s: s.replace("values: [4096]", "values: [1024, 4096]"), "give columns one value of another key"),
    (lambda s: s.replace("grid: {optimizer.lr: [1, 2, 4, 8, 16]}\n  - label: B",
                         "grid: {optimizer.lr: [1, 2, 4, 8, 16], optimizer.momentum: [0.9]}\n  - label: B"),
     "row 'A': kind lr_window sweeps optimizer.lr alone"),
    (lambda s: s.replace("overrides: [optimizer=lars]", "overrides: [optimizer=lars, optimizer.lr=3]"),
     "row 'A' sets optimizer.lr in its overrides"),
    (lambda s: s.replace("[1, 2, 4, 8, 16]", "[1, 2, 4, 8, -16]"), "at least 2 distinct numbers > 0"),
    (lambda s: s.replace("[1, 2, 4, 8, 16]", "[1, 1, 4, 8, 16]"), "at least 2 distinct numbers > 0"),
    (lambda s: s + "confirm_seeds: [3, 4]\n", "confirm_seeds does not apply to kind lr_window"),
    (lambda s: s + "metric: final_test_top1\n", "metric does not apply to kind lr_window"),
    (lambda s: s + "chance: 10\n", "chance does not apply to kind lr_window"),
    (lambda s: s + "select_on: test\n", "kind lr_window's window is on validation"),
    (lambda s: s.replace("window_tolerance: 2", "window_tolerance: 0"), "window_tolerance must be a number"),
    (lambda s: s.replace("kind: lr_window", "kind: table"), "sweep and window_tolerance belong to kind lr_window"),
])
def test_bad_lr_window_specs_fail_with_one_line(edit: Any, needle: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"experiment spec win: .*{needle}") as caught:
        load_spec(write_spec(tmp_path, edit(SPEC)))
    assert "\n" not in str(caught.value)


def test_the_committed_study_plans_its_120_runs_of_120_steps() -> None:
    spec = load_spec("fmnist-lr-window")
    assert len(spec.jobs()) == 120 and spec.min_steps == 50 and spec.min_warmup_steps == 10
    lrs = {row.label: [p["optimizer.lr"] for p in row.points(4096)] for row in spec.rows}
    assert all(len(v) == 8 and math.log10(v[-1] / v[0]) == pytest.approx(math.log10(128)) for v in lrs.values())
    assert "sharpness_preconditioned=true" in spec.base
