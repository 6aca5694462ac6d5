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

from tests.tables.studies import study_fixtures, write_spec
from tvlars.errors import UserError
from tvlars.records import read_jsonl
from tvlars.tables.render import csv_text
from tvlars.tables.spec import load_spec, smoke_spec

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


# --------------------------------------------------------------------------------------------- the spec
def test_the_spec_loads_with_its_sweep_and_tolerance(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, SPEC, "win"))
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
        load_spec(write_spec(tmp_path, edit(SPEC), "win"))
    assert "\n" not in str(caught.value)


def test_the_committed_study_plans_its_120_runs_of_120_steps() -> None:
    spec = load_spec("fmnist-lr-window")
    assert len(spec.jobs()) == 120 and spec.min_steps == 50 and spec.min_warmup_steps == 10
    lrs = {row.label: [p["optimizer.lr"] for p in row.points(4096)] for row in spec.rows}
    assert all(len(v) == 8 and math.log10(v[-1] / v[0]) == pytest.approx(math.log10(128)) for v in lrs.values())
    assert "sharpness_preconditioned=true" in spec.base


# --------------------------------------------------------------------------------------------- the window rule
def test_the_window_rule_on_hand_computed_scores() -> None:
    from tvlars.tables.kinds.lr_window import find_window

    window = find_window({1: {0: 90.0}, 2: {0: 80.0}, 4: {0: 89.0}, 8: {0: 85.0}}, [0], 2.0)
    assert window.members == (1, 4) and window.best == 1 and window.best_score == 90.0
    assert window.gaps == [2] and window.censored == (True, False) and window.width == pytest.approx(math.log10(4))
    tie = find_window({1: {0: 90.0}, 2: {0: 90.0}, 4: {0: 50.0}}, [0], 0.5)
    assert tie.best == 1 and tie.members == (1, 2) and tie.censored == (True, False)
    # a diverged seed makes a value unstable whatever the others scored; a seed that did not finish is left out
    scores = {1: {0: 80.0, 1: None}, 2: {0: 84.0, 1: 83.0}, 4: {1: 85.0}, 8: {0: 10.0, 1: 10.0}}
    window = find_window(scores, [0, 1], 2.0)
    assert window.members == (2, 4) and window.best == 4 and window.best_score == 85.0
    alone = find_window(scores, [0], 2.0)  # without seed 1: 1 is stable (80) but below 84 − 2, 4 has no run
    assert alone.members == (2,) and alone.width == 0
    assert find_window({1: {0: None}, 2: {}}, [0], 2.0) is None


FAKE = {  # (row, lr): per seed (final val top-1, or "diverged" / "failed" / None for a missing run)
    ("A", 1): (80, 81, 82), ("A", 2): (85, 86, 87), ("A", 4): (88, 88, 88), ("A", 8): (87, 86, 85),
    ("A", 16): (85, "diverged", 85),
    ("B", 1): (70, 70, 70), ("B", 2): (84, 84, 84), ("B", 4): (85, 85, 85),
    ("B", 8): ("diverged", "diverged", "diverged"), ("B", 16): ("failed", None, None),
}


def write_run(root: Path, row: str, lr: float, seed: int, val: Any, table: str = "win",
              sharpness: list[float] | None = None) -> Path:
    """One run directory: a completed run's val top-1 ``val`` (test = val − 1, train loss = (100 − val) / 100),
    or a diverged / failed one; ``sharpness``: λ_pre / threshold at steps 30, 60, ... (threshold 4)."""
    run_dir = root / f"{table}-{row}-lr{lr}-s{seed}"
    run_dir.mkdir(parents=True)
    config = {"optimizer": {"_target_": "tvlars.optim.LARS", "lr": lr}, "batch_size": 4096, "epochs": 10,
              "seed": seed, "labels": {"table": table, "row": row, "column": 4096, "point": {"optimizer.lr": lr}}}
    summary: dict[str, Any] = {"status": "completed", "seed": seed, "config": config, "num_classes": 10,
                               "steps_per_epoch": 12, "epochs_completed": 10}
    if isinstance(val, int | float):
        summary |= {"final_val_top1": val, "final_test_top1": val - 1, "final_train_loss": (100 - val) / 100}
    else:
        summary |= {"status": val, "error": "RuntimeError: boom" if val == "failed" else None}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    if sharpness:
        rows = [{"step": 30 * (i + 1), "epoch": 3 * i + 3, "lambda_max": 100.0, "lr": lr, "stability_threshold": None,
                 "lambda_max_preconditioned": 4 * r, "preconditioned_threshold": 4.0} for i, r in enumerate(sharpness)]
        (run_dir / "sharpness.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def write_study(root: Path) -> Path:
    for (row, lr), per_seed in FAKE.items():
        for seed, val in enumerate(per_seed):
            if val is not None:
                ratios = [0.5 + 0.1 * seed, 0.9, 1.0 + 0.05 * seed] if (row, lr) in (("A", 4), ("B", 4)) else None
                write_run(root, row, lr, seed, val, sharpness=ratios)
    write_run(root / "noise", "A", 1, 0, 50, table="other")  # another table's run: ignored
    blind = write_run(root / "blind", "B", 1, 0, 70)  # a duplicate of B @ lr 1 seed 0 without a validation score
    summary = json.loads((blind / "summary.json").read_text())
    del summary["final_val_top1"]
    (blind / "summary.json").write_text(json.dumps(summary))
    return root


spec, runs = study_fixtures(SPEC, "win", write_study)


def test_windows_intervals_and_values_from_records(spec, runs: Path) -> None:
    """A: means 81, 86, 88, 86, and 16 unstable (a seed diverged) → best 4 (88), window {2, 4, 8} (≥ 86).
    Leaving out seed 0: 2 (86.5) in, 8 (85.5) out → [2, 4]; seed 1: [2, 8] (16's mean 85 < 86); seed 2: 2 (85.5)
    out → [4, 8]: widths log10 2 to log10 4. B: best 4 (85) → {2, 4} with every seed left out."""
    from tvlars.tables.collect import collect
    from tvlars.tables.kinds.lr_window import LR_WINDOW

    table = LR_WINDOW.build(spec, collect(runs))
    a, b = table.cells[("A", 4096)], table.cells[("B", 4096)]
    assert a.window.members == (2, 4, 8) and a.window.best == 4 and a.window.width == pytest.approx(math.log10(4))
    assert [w.members for w in a.left_out] == [(2, 4), (2, 4, 8), (4, 8)]
    assert a.interval == pytest.approx((math.log10(2), math.log10(4)))
    assert b.window.members == (2, 4) and b.interval == pytest.approx((math.log10(2), math.log10(2)))
    sixteen = a.at(16)
    assert sixteen.status == "ok" and sixteen.val == [85, 85] and sixteen.diverged == 1
    assert [Path(d).name for d in sixteen.runs] == ["win-A-lr16-s0", "win-A-lr16-s2"]
    assert sixteen.test == [84, 84] and sixteen.train_loss == [0.15, 0.15]
    assert [(v.value, v.status) for v in b.values][-2:] == [(8, "diverged"), (16, "failed")]
    assert len(b.at(1).runs) == 3  # the run without a validation score was left out, not counted twice
    md = table.markdown
    assert "| A | [2, 8] | 0.60 | 0.30 – 0.60 | 4 | 88.00 ± 0.00 |" in md
    assert "| B | [2, 4] | 0.30 | 0.30 – 0.30 | 4 | 85.00 ± 0.00 |" in md
    assert "| 16 | 85.00 ± 0.00 (n=2/3) | 84.00 ± 0.00 (n=2/3) | 0.150 | 1/3 |  |" in md
    assert "| 8 | 86.00 ± 1.00 | 85.00 ± 1.00 | 0.140 | 0/3 | ✓ |" in md and "| 4 | 88.00 ± 0.00 | 87.00 ± 0.00 |" in md
    assert "| 8 | div | div | div | 3/3 |  |" in md and "| 16 | failed | failed | failed | 0/3 |  |" in md
    assert ("- A (0.60 decades) is wider than B (0.30 decades): within seed noise, the leave-one-seed-out widths "
            "overlap (0.30 – 0.60 against 0.30 – 0.30).") in md
    assert ". Provisional: the sweep of B (12 of 15 runs finished) is incomplete." in md  # lr 16: 1 failed, 2 missing
    assert "**Incomplete sweeps**, runs finished of expected: B (12 of 15). Their windows" in md
    assert "within 2 points of the row's best stable mean" in md and "×2 (0.30 decades)" in md
    assert "B @ B=4096: lr=16 seed 0 failed: RuntimeError: boom" in md
    assert "B @ B=4096: 1 completed run(s) have no final_val_top1" in md
    assert "1 run(s) with row label" not in md and "> A is at least as wide as B." in md
    lines = list(csv.DictReader(io.StringIO(table.files["lr_window.csv"])))
    assert len(lines) == 10 and [line["in_window"] for line in lines[:5]] == ["0", "1", "1", "1", "0"]
    assert lines[4]["val_mean"] == "85.0000" and lines[4]["diverged"] == "1" and lines[4]["n_seeds"] == "2"
    windows = list(csv.DictReader(io.StringIO(table.files["lr_window_rows.csv"])))
    assert (windows[0]["low"], windows[0]["high"], windows[0]["width_decades"], windows[0]["width_min"]) == \
        ("2.0", "8.0", "0.6021", "0.3010")


def test_censored_windows_and_comparisons_beyond_seed_noise(tmp_path: Path) -> None:
    from tvlars.tables.collect import collect
    from tvlars.tables.kinds.lr_window import LR_WINDOW

    root = tmp_path / "runs"
    for lr, scores in ((1, (88, 88, 87)), (2, (88, 87, 88)), (4, (87, 88, 88)), (8, (80, 80, 80)), (16, (70,) * 3)):
        for seed, val in enumerate(scores):
            write_run(root, "A", lr, seed, val)
    for lr, scores in ((1, (70,) * 3), (2, (70,) * 3), (4, (85,) * 3), (8, (60,) * 3), (16, (60,) * 3)):
        for seed, val in enumerate(scores):
            write_run(root, "B", lr, seed, val)
    md = LR_WINDOW.build(load_spec(write_spec(tmp_path, SPEC, "win")), collect(root)).markdown
    assert "| A | [≤ 1, 4] | ≥ 0.60 | 0.60 – 0.60 | 1 |" in md and "| B | [4, 4] | 0.00 | 0.00 – 0.00 | 4 |" in md
    assert ("- A (≥ 0.60 decades) is wider than B (0.00 decades): beyond seed noise, every leave-one-seed-out width "
            "of A (0.60 – 0.60) exceeds every one of B (0.00 – 0.00). The window of A reaches the edge of its sweep: "
            "its width is a lower bound.") in md


def test_a_sweep_in_progress_says_which_rows_are_incomplete(tmp_path: Path) -> None:
    """Committed part-way (the study resumes later): a row without a finished run has no window yet (not "no
    stable value"), a row with some has a provisional one, and the comparison says so."""
    from tvlars.tables.collect import collect
    from tvlars.tables.kinds.lr_window import LR_WINDOW

    root = tmp_path / "runs"
    for lr in (1, 2, 4):
        for seed in (0, 1, 2):
            write_run(root, "A", lr, seed, 80 + lr)
    md = LR_WINDOW.build(load_spec(write_spec(tmp_path, SPEC, "win")), collect(root)).markdown
    assert "| A | [2, 4] | 0.30 |" in md and "| B | – (no finished run) | – | – | – | – |" in md
    assert "**Incomplete sweeps**, runs finished of expected: A (9 of 15), B (0 of 15)." in md
    assert "- A vs B: B has no finished run yet, no window to compare." in md
    assert "no stable value" not in md


def test_make_tables_writes_the_lr_window_outputs_and_figures(spec, runs: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from tvlars.tables import build

    out = tmp_path / "results"
    out.mkdir()
    (out / "sharpness.png").write_bytes(b"an older build's figure")
    assert build.main(["--table", str(spec.path), "--source", str(runs), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["RUN.md", "lr_window.csv", "lr_window.md", "lr_window.png",
                                                     "lr_window_rows.csv", "lr_window_sharpness.png", "runs"]
    assert len(list((out / "runs").iterdir())) == 28 + 1  # the spec's records and the unreadable-validation one
    names = ("lr_window.md", "lr_window.csv", "lr_window.png", "lr_window_sharpness.png", "RUN.md")
    first = {name: (out / name).read_bytes() for name in names}
    assert build.main(["--table", str(spec.path), "--out", str(out), "--source", str(out / "runs")]) == 0
    assert {name: (out / name).read_bytes() for name in names} == first  # the records rebuild the same bytes
    assert "# Fake LR window study" in capsys.readouterr().out


def test_the_sharpness_figure_draws_each_row_at_its_best_lr(spec, runs: Path, tmp_path: Path) -> None:
    from tvlars.tables.collect import collect
    from tvlars.tables.instrument_figures import preconditioned_ratio, series
    from tvlars.tables.kinds.lr_window import LR_WINDOW

    table = LR_WINDOW.build(spec, collect(runs))
    ratios = [series(d, "sharpness.jsonl", preconditioned_ratio) for d in table.cells[("A", 4096)].at(4).runs]
    assert [r.round(6).tolist() for r in ratios] == [[0.5, 0.9, 1.0], [0.6, 0.9, 1.05], [0.7, 0.9, 1.1]]
    for run_dir in runs.rglob("sharpness.jsonl"):
        run_dir.unlink()
    df = collect(runs)
    assert [p.name for p in LR_WINDOW.draw(spec, LR_WINDOW.build(spec, df), df, tmp_path / "figs")] == ["lr_window.png"]


def _figure_axes(spec: Any, runs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """The accuracy figure's panels as drawn, caught before they are saved (the first of the figures drawn)."""
    from tvlars.tables.collect import collect
    from tvlars.tables.kinds import lr_window

    drawn: list[list[Any]] = []
    monkeypatch.setattr(lr_window, "save", lambda fig, axes, *args, **kwargs: drawn.append(axes) or [])
    df = collect(runs)
    lr_window.LR_WINDOW.draw(spec, lr_window.LR_WINDOW.build(spec, df), df, tmp_path)
    return drawn[0]


@pytest.mark.parametrize("study", ["fixture", "committed"])
def test_the_window_bars_and_crosses_never_cross_the_curves(study: str, spec, runs: Path,
                                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every panel's curves and seed bands lie below the lowest window bar and above the highest diverged cross;
    the committed study has five rows, whose fifth bar crossed LAMB's curves when the room was a fixed margin."""
    if study == "committed":
        spec, runs = load_spec("fmnist-lr-window"), Path(__file__).parents[2] / "results" / "fmnist-lr-window" / "runs"
    axes = _figure_axes(spec, runs, monkeypatch, tmp_path)
    low, high = axes[0].get_ylim()
    bars = [line.get_ydata()[0] for line in axes[0].lines if line.get_marker() == "|" and len(line.get_xdata())]
    crosses = [line.get_ydata()[0] for ax in axes for line in ax.lines if line.get_marker() == "x"
               and len(line.get_xdata())]
    data = [y for ax in axes for line in ax.lines if line.get_marker() == "o" for y in line.get_ydata()]
    data += [y for ax in axes for band in ax.collections for path in band.get_paths() for y in path.vertices[:, 1]]
    fractions = [(y - low) / (high - low) for y in data]
    assert len(bars) == len(spec.rows) and (study == "committed" or crosses)
    assert max(fractions) < min(bars) and min(fractions) > max(crosses, default=0.0)


def test_comparison_with_the_committed_lr_window_table(spec, runs: Path) -> None:
    from tvlars.tables.collect import collect
    from tvlars.tables.kinds.lr_window import LR_WINDOW

    table = LR_WINDOW.build(spec, collect(runs))
    committed = table.files["lr_window.csv"]
    assert "10 same value" in LR_WINDOW.compare(committed, table)
    lines = list(csv.DictReader(io.StringIO(committed)))
    lines[2]["val_mean"], lines[2]["val_std"] = "80.0", "0.5"  # A @ 4 was far lower
    lines[1]["val_mean"] = "86.5"  # A @ 2: within the seeds' spread (85, 86, 87)
    report = LR_WINDOW.compare(csv_text(list(lines[0]), [line.values() for line in lines]), table)
    assert "8 same value, 1 within seed noise, 1 different" in report
    assert "- A @ lr=4: different (80.00 → 88.00, Welch p = " in report
    assert "- A @ lr=2: within seed noise (86.50 → 86.00, Welch p = " in report


def test_the_spec_names_its_kind(spec) -> None:
    from tvlars.tables.kinds import KINDS
    from tvlars.tables.kinds.lr_window import LR_WINDOW

    assert KINDS[spec.kind] is LR_WINDOW and LR_WINDOW.csv == "lr_window.csv" and not LR_WINDOW.instruments


# --------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_the_study_spec_runs_as_a_smoke_reproduce(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fmnist-lr-window shrunk (5 rows × its first 2 LRs × seed 0, 4 steps each, on fake Fashion-MNIST) through
    tvlars.tables.reproduce: lr_window.md/.csv/.png with the records, the preconditioned sharpness in every run's
    records and its figure; a rerun launches nothing and compares every value equal."""
    from tvlars.tables import reproduce

    args = ["--table", "fmnist-lr-window", "--launcher", "basic", "--profile", "smoke", "--runs",
            str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    assert reproduce.main(args) == 0
    runs = tmp_path / "runs" / "smoke" / "fmnist-lr-window"
    results = runs / "results"
    assert {"lr_window.md", "lr_window.csv", "lr_window_rows.csv", "lr_window.png", "runs"} <= \
        {p.name for p in results.iterdir()}
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    assert len(summaries) == 10 and {s["status"] for s in summaries} <= {"completed", "diverged"}
    sharpness = [r for p in runs.glob("*/sharpness.jsonl") for r in read_jsonl(p)]
    assert sharpness and all("lambda_max_preconditioned" in r and r["preconditioned_threshold"] for r in sharpness)
    assert len(list(csv.DictReader(io.StringIO((results / "lr_window.csv").read_text())))) == 10
    assert (results / "lr_window.md").read_text().startswith("# fmnist-lr-window: stable peak-LR window")
    assert "[smoke]" in (results / "lr_window.md").read_text().split("\n")[0]
    capsys.readouterr()
    assert reproduce.main(args) == 0
    out = capsys.readouterr().out
    assert "to run: 0 jobs" in out and "10 same value" in out
