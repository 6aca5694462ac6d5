"""The instruments' figures from run directories: written when there are data, one panel per batch size."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest

from tvlars.report.instrument_figures import (
    _curves,
    noise_scale_figure,
    preconditioned_figure,
    preconditioned_ratio,
    sharpness_figure,
)


def _run(root: Path, name: str, batch: int, scale: float, threshold: float | None) -> Path:
    run_dir = root / name
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps({"config": {"batch_size": batch}}))
    noise = [{"step": s, "epoch": 1, "b_simple": scale * (s + 1), "g2": 1.0, "trace_sigma": scale * (s + 1)}
             for s in range(0, 40, 4)]
    sharp = [{"step": s, "epoch": 1, "lambda_max": scale + s, "lr": 0.1, "stability_threshold": threshold}
             for s in range(0, 40, 8)]
    (run_dir / "noise_scale.jsonl").write_text("".join(json.dumps(r) + "\n" for r in noise) + '{"step": 4')  # torn
    (run_dir / "sharpness.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sharp))
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, list[Path]]:
    return {"SGD": [_run(tmp_path, "sgd-256-s0", 256, 10.0, 13.6), _run(tmp_path, "sgd-256-s1", 256, 12.0, 13.6),
                    _run(tmp_path, "sgd-1024-s0", 1024, 20.0, 13.6)],
            "LARS": [_run(tmp_path, "lars-256-s0", 256, 30.0, None)]}


def test_curves_are_grouped_by_batch_size_and_row_with_one_column_per_run(runs: dict[str, list[Path]]) -> None:
    curves = _curves(runs, "noise_scale.jsonl", "b_simple")
    assert sorted(curves) == [256, 1024]
    assert curves[256]["SGD"].shape == (10, 2) and curves[1024]["SGD"].shape == (10, 1)
    assert curves[256]["SGD"].loc[4].tolist() == [50.0, 60.0]  # the torn last line is skipped
    thresholds = _curves(runs, "sharpness.jsonl", "stability_threshold")
    assert "LARS" not in thresholds[256] and "SGD" in thresholds[256]  # no line where none applies


def test_figures_are_written_with_one_panel_per_batch_size(runs: dict[str, list[Path]], tmp_path: Path) -> None:
    out = tmp_path / "figures"
    assert noise_scale_figure(runs, out) == [out / "noise_scale.png"]
    assert sharpness_figure(runs, out, title="mini") == [out / "sharpness.png"]
    for name in ("noise_scale.png", "sharpness.png"):
        height, width, _ = matplotlib.image.imread(out / name).shape
        assert width > height  # two panels side by side


def test_the_preconditioned_figure_draws_the_ratio_to_the_threshold(runs: dict[str, list[Path]],
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "figures"
    assert preconditioned_figure(runs, out) == []  # no run measured it
    run_dir = runs["LARS"][0]
    rows = [{"step": 8, "lambda_max": 30.0, "lambda_max_preconditioned": 1.5, "preconditioned_threshold": 3.0},
            {"step": 16, "lambda_max": 31.0, "lambda_max_preconditioned": None, "preconditioned_threshold": None},
            {"step": 24, "lambda_max": 32.0, "lambda_max_preconditioned": 4.5, "preconditioned_threshold": 3.0}]
    (run_dir / "sharpness.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [preconditioned_ratio(r) for r in rows] == [0.5, None, 1.5]
    assert _curves(runs, "sharpness.jsonl", preconditioned_ratio)[256]["LARS"].iloc[:, 0].to_dict() == \
        {8: 0.5, 24: 1.5}
    assert preconditioned_figure(runs, out) == [out / "preconditioned_sharpness.png"]


def test_no_records_no_figure(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert noise_scale_figure({"SGD": [empty]}, tmp_path) == []
    assert sharpness_figure({}, tmp_path) == []
    assert not list(tmp_path.glob("*.png"))


def test_make_tables_draws_the_instrument_figures_of_a_table(tmp_path: Path) -> None:
    """Rows in the spec's order, every finished run of the row, a run of another table left out."""
    from tests.test_report import write_run
    from tvlars.report import collect
    from tvlars.report.instrument_figures import write_instrument_figures
    from tvlars.spec import load_spec

    spec_path = tmp_path / "mini.yaml"
    spec_path.write_text("title: mini\ncolumns: {key: batch_size, values: [256]}\nseeds: [0]\nchance: 10\n"
                         "rows:\n  - {label: LARS, overrides: [optimizer=lars], grid: {optimizer.lr: [1]}}\n")
    root = tmp_path / "runs"
    for table in ("mini", "other"):
        run_dir = write_run(root, "LARS", 256, {"optimizer.lr": 1}, 0, 80.0, table=table)
        (run_dir / "noise_scale.jsonl").write_text("".join(
            json.dumps({"step": s, "b_simple": 100.0 + s, "g2": 1.0, "trace_sigma": 1.0}) + "\n" for s in (2, 4)))
    out = tmp_path / "out"
    assert write_instrument_figures(load_spec(spec_path), collect(root), out) == [out / "noise_scale.png"]
