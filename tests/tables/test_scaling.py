"""Scaling tables (spec kind: scaling): the spec checks, the selection of the fewest steps to target, the critical
batch-size fit, scaling.md/.csv/.png, make_tables and the comparison with a committed table; fake run records."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tables.studies import study_fixtures
from tvlars.errors import UserError
from tvlars.tables import build, reproduce
from tvlars.tables.collect import collect
from tvlars.tables.kinds import KINDS
from tvlars.tables.kinds.accuracy import ACCURACY
from tvlars.tables.kinds.scaling import SCALING, fit_critical_batch, km_median, scaling_axes
from tvlars.tables.render import csv_text
from tvlars.tables.spec import load_spec, smoke_spec

TARGET = {"metric": "val_top1", "value": 80.0, "stop": True}
SPEC = """\
kind: scaling
title: Fake scaling study
columns: {key: batch_size, values: [64, 128, 256, 512]}
seeds: [0, 1]
base: [target.metric=val_top1, target.value=80, target.stop=true, eval_every_steps=4]
rows:
  - label: SGD
    overrides: [optimizer=sgd]
    grid: {optimizer.lr: [0.1, 0.2]}
  - label: LARS
    overrides: [optimizer=lars]
    grid: {optimizer.lr: [1, 2]}
  - label: AdamW
    overrides: [optimizer=adamw]
    grid: {optimizer.lr: [0.001, 0.002]}
notes: Synthetic records.
"""


def write_run(root: Path, row: str, batch: int, lr: float, seed: int, steps: float | None,
              status: str = "completed", target: dict[str, Any] | None = TARGET, table: str = "scal",
              epochs: int = 5, steps_per_epoch: int = 20, error: str | None = None) -> Path:
    """One run directory whose summary.json carries steps/images/time to target (null: not reached)."""
    run_dir = root / f"{table}-{row}-b{batch}-lr{lr}-s{seed}-{status}-{json.dumps(target)}".replace(" ", "")
    run_dir.mkdir(parents=True)
    point = {"optimizer.lr": lr}
    config = {"optimizer": {"_target_": "tvlars.optim.LARS", "lr": lr},
              "schedule": {"_target_": "tvlars.schedules.Constant"}, "batch_size": batch, "epochs": epochs,
              "seed": seed, "eval_every_steps": 4, "labels": {"table": table, "row": row, "column": batch,
                                                                "point": point},
              **({"target": target} if target is not None else {})}
    summary = {"status": status, "seed": seed, "config": config, "steps_per_epoch": steps_per_epoch,
               "best_test_top1": 85.0, "final_test_top1": 84.0, "epochs_completed": epochs, "num_classes": 10,
               "steps_to_target": steps, "images_to_target": None if steps is None else steps * batch,
               "time_to_target_s": None if steps is None else steps / 10, "error": error}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def lars_steps(batch: int) -> float:
    """LARS's cells follow the model: S_min = 50, B_noise = 200 (inside the measured 64 … 512); its two seeds at
    0.98 and 1.02 times it have the mean on the model and the median (the first seed to reach) at 0.98 times it."""
    return 50.0 * (1 + 200.0 / batch)


def write_study(root: Path) -> Path:
    # SGD @ 64: lr 0.2 has the fewest mean steps among seeds that reached (80) but seed 1 never reached it;
    # lr 0.1 reached with both seeds (100, 120) and wins.
    for seed, steps in ((0, 100), (1, 120)):
        write_run(root, "SGD", 64, 0.1, seed, steps)
    write_run(root, "SGD", 64, 0.2, 0, 80)
    write_run(root, "SGD", 64, 0.2, 1, None)
    # SGD @ 128: both reached everywhere -> the fewest mean steps (lr 0.2: 50, 54).
    for lr, pair in ((0.1, (60, 64)), (0.2, (50, 54))):
        for seed, steps in enumerate(pair):
            write_run(root, "SGD", 128, lr, seed, steps)
    # SGD @ 256: no trial reached with both seeds -> lr 0.1 (1 of 2) is chosen, reported as 30 (1/2 reached: the
    # median is the step by which half the seeds reached it).
    write_run(root, "SGD", 256, 0.1, 0, 30)
    for lr, seed in ((0.1, 1), (0.2, 0), (0.2, 1)):
        write_run(root, "SGD", 256, lr, seed, None)
    # SGD @ 512: nothing reached the target in 5 epochs × 20 steps.
    for lr in (0.1, 0.2):
        for seed in (0, 1):
            write_run(root, "SGD", 512, lr, seed, None)
    # LARS: lr 1 follows the model (seeds ±2 %, so the means are exact), lr 2 is always slower.
    for batch in (64, 128, 256, 512):
        for seed, factor in ((0, 0.98), (1, 1.02)):
            write_run(root, "LARS", batch, 1, seed, lars_steps(batch) * factor)
            write_run(root, "LARS", batch, 2, seed, lars_steps(batch) * 2)
    # AdamW: every run diverged @ 64, runs failed @ 128, nothing @ 256, one point reached @ 512.
    for lr in (0.001, 0.002):
        for seed in (0, 1):
            write_run(root, "AdamW", 64, lr, seed, None, status="diverged")
            write_run(root, "AdamW", 128, lr, seed, None, status="failed", error="RuntimeError: boom")
            write_run(root, "AdamW", 512, lr, seed, 40 if lr == 0.001 else None)
    # Noise: a run against another target, one without a target, a run of another table.
    write_run(root, "LARS", 64, 1, 0, 5, target={"metric": "val_top1", "value": 50.0})
    write_run(root, "LARS", 64, 1, 1, 5, target=None)
    write_run(root, "LARS", 64, 1, 0, 1, table="other")
    return root


spec, runs = study_fixtures(SPEC, "scal", write_study)


# --------------------------------------------------------------------------------------------- the fit
@pytest.mark.parametrize(("s_min", "b_noise"), [(1000.0, 2000.0), (30.0, 300.0), (5000.0, 400.0)])
def test_fit_recovers_known_parameters_without_noise(s_min: float, b_noise: float) -> None:
    batches = [256.0, 512.0, 1024.0, 2048.0, 4096.0]
    fit = fit_critical_batch(batches, [s_min * (1 + b_noise / b) for b in batches])
    assert fit.status == "fit" and fit.cells == 5
    assert fit.s_min == pytest.approx(s_min, rel=0.01) and fit.b_noise == pytest.approx(b_noise, rel=0.01)
    assert fit.low == pytest.approx(b_noise, rel=0.01) and fit.high == pytest.approx(b_noise, rel=0.01)
    assert fit.text().startswith(f"{fit.b_noise:.4g} (95 % interval")


def test_fit_with_noise_is_sensible() -> None:
    """10 % multiplicative noise: the estimate stays near the truth and its interval holds it, for most draws."""
    batches = np.array([64.0, 128, 256, 512, 1024, 2048, 4096, 8192])
    rng = np.random.default_rng(0)
    covered, errors = 0, []
    for _ in range(40):
        steps = 1000 * (1 + 1000 / batches) * np.exp(rng.normal(0, 0.1, len(batches)))
        fit = fit_critical_batch(list(batches), list(steps))
        assert fit.status == "fit" and fit.low < fit.b_noise < fit.high
        covered += fit.low <= 1000 <= fit.high
        errors.append(abs(math.log(fit.b_noise / 1000)))
    assert covered >= 34  # a 95 % interval: 38 of 40 expected
    assert float(np.median(errors)) < math.log(1.25)


def test_fit_degenerate_cases() -> None:
    batches = [64.0, 128.0, 256.0, 512.0]
    assert fit_critical_batch(batches[:2], [10.0, 6.0]).status == "too_few"
    assert "2 batch size(s) with a finite median steps to target, the fit needs 3" in \
        fit_critical_batch(batches[:2], [10., 6.]).text()
    assert fit_critical_batch([], []).status == "too_few"
    perfect = fit_critical_batch(batches, [6400 / b for b in batches])  # S ∝ 1/B throughout: only a lower bound
    assert perfect.status == "above" and "B_noise > 512" in perfect.text()
    flat = fit_critical_batch(batches, [100.0, 100.0, 100.0, 100.0])  # no speed-up at all: only an upper bound
    assert flat.status == "below" and "B_noise < 64" in flat.text()
    assert not perfect.identified and not flat.identified
    worse = fit_critical_batch(batches, [10.0, 20.0, 40.0, 80.0])  # more steps at larger B: not this model
    assert worse.status == "below"


def test_a_fit_from_few_batch_sizes_or_with_a_wide_interval_is_uninformative() -> None:
    batches = [64.0, 128.0, 256.0, 512.0]
    exact = fit_critical_batch(batches[:3], [50 * (1 + 200 / b) for b in batches[:3]])
    assert exact.status == "fit" and exact.b_noise == pytest.approx(200, rel=0.01)  # right, but from 3 points
    assert exact.text().endswith("; uninformative: only 3 batch sizes fitted (fewer than 4)")
    noisy = fit_critical_batch(batches, [50 * (1 + 200 / b) * f for b, f in zip(batches, (1.1, 0.9, 1.1, 0.9),
                                                                                 strict=True)])
    assert noisy.status == "fit" and noisy.high / noisy.low > 10
    assert noisy.caveats() == [f"the 95 % interval spans a factor {noisy.high / noisy.low:.3g} (more than 10)"]
    tight = fit_critical_batch(batches, [50 * (1 + 200 / b) * f for b, f in zip(batches, (1.05, 0.95, 1.05, 0.95),
                                                                                 strict=True)])
    assert tight.caveats() == [] and "uninformative" not in tight.text()


def test_kaplan_meier_median_by_hand() -> None:
    # 5 runs reached the target at 50, 80 and 150 steps; 2 stopped short at caps of 60 and 100. At 50, 5 at risk:
    # S = 4/5 = 0.8; the run censored at 60 leaves 3 at risk; at 80: S = 0.8 × 2/3 = 0.533 (> ½); the run censored
    # at 100 leaves 1; at 150: S = 0. The median, the first step with S ≤ ½, is 150 (dropping the censored runs
    # would give 80; counting them as reaching at their cap, 100).
    assert km_median([50.0, 80.0, 150.0], [60.0, 100.0]) == 150.0
    # Censored at the cap, after every reached step, KM is the plain fraction: 2 of 4 reached, S = ½ at 120.
    assert km_median([120.0, 90.0], [200.0, 200.0]) == 120.0
    assert km_median([90.0], [200.0, 200.0]) == math.inf  # fewer than half reached: beyond the cap
    assert km_median([], [200.0]) == math.inf and math.isnan(km_median([], []))
    assert km_median([90.0], [math.nan]) == 90.0  # an unknown cap counts as after every reached step


# --------------------------------------------------------------------------------------------- the spec
def test_scaling_spec_loads(spec) -> None:
    assert spec.kind == "scaling" and spec.metric == "steps_to_target" and spec.target == ("val_top1", 80.0)
    smoke = smoke_spec(spec, "/data")
    assert smoke.kind == "scaling" and smoke.target == ("val_top1", 80.0) and smoke.columns == [16, 32]


def test_smoke_overrides_replace_the_target(tmp_path: Path) -> None:
    path = tmp_path / "scal.yaml"
    path.write_text(SPEC + "smoke: [target.value=10]\n")
    assert smoke_spec(load_spec(path), "/data").target == ("val_top1", 10.0)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s.replace("{key: batch_size,", "{key: optimizer.lr,"),
         "kind scaling plots steps to target against the batch size, so columns.key must be batch_size"),
        (lambda s: s + "metric: best_test_top1\n", "the metric of kind scaling is steps_to_target"),
        (lambda s: s.replace("target.value=80, ", ""), "add target.metric=<metric> and target.value=<number> to base"),
        (lambda s: s.replace("target.value=80", "target.value=high"), "target.value=<number>"),
        (lambda s: s + "chance: 10.0\n", "chance applies to accuracy tables"),
        (lambda s: s + "compare: {method: [LARS]}\n", "compare applies to accuracy tables"),
        (lambda s: s.replace("[optimizer=lars]", "[optimizer=lars, target.value=70]"),
         "row 'LARS' sets target.value: every cell of a scaling table has the same target"),
        (lambda s: s.replace("{optimizer.lr: [1, 2]}", "{target.value: [70, 80]}"), "row 'LARS' sets target.value"),
        (lambda s: s.replace("kind: scaling", "kind: curve"), "kind must be one of ('table', 'scaling', 'lr_window')"),
        (lambda s: s.replace("kind: scaling\n", ""), "metric must be one of"),  # a table of steps_to_target? no
    ],
)
def test_bad_scaling_specs_fail_with_one_line(edit, needle: str, tmp_path: Path) -> None:
    text = edit(SPEC)
    if "kind" not in text:
        text += "metric: steps_to_target\n"
    path = tmp_path / "scal.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="^experiment spec scal: ") as info:
        load_spec(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------- selection
def test_selection_takes_the_fewest_steps_among_trials_that_always_reach(spec, runs: Path) -> None:
    table = SCALING.build(spec, collect(runs))
    cells = table.cells
    sgd64 = cells[("SGD", 64)]
    assert sgd64.status == "ok" and sgd64.point == {"optimizer.lr": 0.1}  # not lr 0.2's 80 with a seed unreached
    assert sgd64.mean == pytest.approx(110) and sgd64.std == pytest.approx(math.sqrt(200)) and sgd64.n == 2
    assert sgd64.median == 100 and sgd64.values == [100, 120] and sgd64.trials == [100, 80]  # seed 1 of lr 0.2: no
    assert sgd64.images == pytest.approx(110 * 64) and sgd64.time_s == pytest.approx(11)
    assert cells[("SGD", 128)].point == {"optimizer.lr": 0.2} and cells[("SGD", 128)].mean == pytest.approx(52)
    sgd256 = cells[("SGD", 256)]
    assert (sgd256.status, sgd256.median, sgd256.mean, sgd256.n, sgd256.finished) == ("ok", 30, 30, 1, 2)
    assert sgd256.point == {"optimizer.lr": 0.1}
    assert cells[("SGD", 512)].status == "not_reached" and cells[("SGD", 512)].cap == 100
    assert cells[("SGD", 512)].trials == [math.inf, math.inf]
    for batch in spec.columns:
        assert cells[("LARS", batch)].mean == pytest.approx(lars_steps(batch))  # the stray targets are ignored
        assert cells[("LARS", batch)].median == pytest.approx(0.98 * lars_steps(batch))
        assert cells[("LARS", batch)].point == {"optimizer.lr": 1}
    assert [cells[("AdamW", b)].status for b in spec.columns] == ["diverged", "failed", "missing", "ok"]
    assert cells[("AdamW", 512)].point == {"optimizer.lr": 0.001}
    problems = "\n".join(table.problems)
    assert "1 run(s) measured against target val_top1=50 instead of the spec's val_top1=80 (ignored)" in problems
    assert "1 run(s) without target.metric/target.value in their config (ignored)" in problems
    assert "AdamW @ B=128: lr=0.001 seed 0 failed: RuntimeError: boom" in problems
    assert "AdamW @ B=256: 0 of 4 runs finished" in problems


def test_confirmation_seeds_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "scal.yaml"
    path.write_text(SPEC.replace("seeds: [0, 1]", "seeds: [0]\nconfirm_seeds: [0, 1, 2]\nreuse_search_seeds: true"))
    spec = load_spec(path)
    root = tmp_path / "runs"
    write_run(root, "SGD", 64, 0.1, 0, 100)
    write_run(root, "SGD", 64, 0.2, 0, 80)  # the search picks lr 0.2
    write_run(root, "SGD", 64, 0.2, 1, 90)
    write_run(root, "SGD", 64, 0.2, 2, None)  # a confirmation seed that never reached the target
    write_run(root, "SGD", 128, 0.1, 0, 50)
    write_run(root, "SGD", 128, 0.2, 0, 60)  # the search picks lr 0.1; its confirmation has not run yet
    write_run(root, "SGD", 256, 0.1, 0, 40)
    for seed in (1, 2):  # the confirmation of SGD @ 256: 1 of 3 seeds reached the target
        write_run(root, "SGD", 256, 0.1, seed, None)
    table = SCALING.build(spec, collect(root))
    cell = table.cells[("SGD", 64)]
    assert (cell.point, cell.mean, cell.n, cell.finished, cell.expected) == ({"optimizer.lr": 0.2}, 85, 2, 3, 3)
    # seeds reached at 80 and 90, the third censored at its 100-step cap: S = 2/3 after 80, 1/3 after 90
    assert cell.search_done and cell.median == 90 and "| 90 (2/3 reached) |" in table.markdown
    short = table.cells[("SGD", 256)]
    assert short.median == math.inf and "| > 100 (1/3 reached) |" in table.markdown  # fewer than half reached
    assert table.fits["SGD"].cells == 2  # the fit leaves SGD @ 256 out: its median is beyond the cap
    assert "The confirmation includes the search seed 0 (`reuse_search_seeds: true`)" in table.markdown
    pending = table.cells[("SGD", 128)]
    assert pending.point == {"optimizer.lr": 0.1} and pending.search_done and pending.finished == 1
    assert "SGD @ B=128: confirmation of the chosen point (lr=0.1): 1 of 3 seeds finished (seeds 1, 2 not)" in \
        "\n".join(table.problems)


# --------------------------------------------------------------------------------------------- outputs
def test_markdown_and_csv(spec, runs: Path) -> None:
    table = SCALING.build(spec, collect(runs))
    md = table.markdown
    assert md.startswith("# Fake scaling study\n")
    assert "optimizer steps until `val_top1` reaches 80 (the target of the runs' configs" in md
    assert "Selection rule: chosen on validation (steps until val_top1 reaches 80, search seeds 0, 1), reported on " \
           "the same target over the same seeds 0, 1 (no confirmation runs)." in md and "Warning" not in md
    assert "evaluations every 4 optimizer steps (`eval_every_steps`) and at the end of every evaluated epoch" in md
    assert "| SGD | constant | 4 | 100 (2/2 reached) | 50 (2/2 reached) | 30 (1/2 reached) | not reached (in 100 " \
           "steps) |" in md
    assert "| AdamW | constant | 4 | div | failed‡ | – | 40 (2/2 reached) |" in md
    assert "## Critical batch size" in md and "## What this study can and cannot show" in md
    fits = table.fits  # of the medians: 0.98 times the model, the same B_noise
    assert fits["LARS"].status == "fit" and fits["LARS"].b_noise == pytest.approx(200, rel=0.01)
    assert fits["LARS"].s_min == pytest.approx(49, rel=0.01) and fits["LARS"].caveats() == []
    assert fits["AdamW"].status == "too_few"
    assert f"| LARS | 4 | 49 | {fits['LARS'].text()} |" in md
    assert "| AdamW | 1 | – | not identifiable: 1 batch size(s) with a finite median steps to target, the fit needs " \
           "3 |" in md
    assert "## Selected point per cell" in md and "Notes: Synthetic records." in md
    lines = list(csv.DictReader(io.StringIO(table.files["scaling.csv"])))
    assert len(lines) == 3 * 4
    assert list(lines[0]) == ["row", "batch_size", "steps_median", "steps_mean", "steps_std", "images_mean",
                              "time_mean_s", "n_reached", "n_seeds", "cap_steps", "chosen_point", "status"]
    assert lines[0] == {"row": "SGD", "batch_size": "64", "steps_median": "100.0000", "steps_mean": "110.0000",
                        "steps_std": "14.1421", "images_mean": "7040.0000", "time_mean_s": "11.0000",
                        "n_reached": "2", "n_seeds": "2", "cap_steps": "100.0000",
                        "chosen_point": '{"optimizer.lr": 0.1}', "status": "ok"}
    assert [line["status"] for line in lines[8:]] == ["diverged", "failed", "missing", "ok"]
    assert lines[3]["steps_mean"] == "" and lines[3]["status"] == "not_reached"


def test_figure(spec, runs: Path, tmp_path: Path) -> None:
    table = SCALING.build(spec, collect(runs))
    ax = scaling_axes(spec, table)
    labels = ax.get_legend_handles_labels()[1]
    assert labels[:3] == ["SGD", "LARS", "AdamW"]  # the perfect-scaling line goes through SGD's 100 (LARS: 202)
    assert labels[3:] == ["perfect scaling S ∝ 1/B (through SGD at B=64)", "a seed that reached the target",
                          "fit S_min (1 + B_noise / B) (row colour)",
                          "beyond the cap: under half the seeds reached, or diverged (top edge)"]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    tops = [line for line in ax.lines if line.get_marker() == "^" and not line.get_label().startswith("beyond")]
    assert sorted(x for line in tops for x in line.get_xdata()) == [64, 512]  # AdamW diverged, SGD not reached
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        out.mkdir()
        assert SCALING.figures(spec, table, collect(runs), out) == [out / "scaling.png", out / "tuning_curve.png"]
    assert (first / "scaling.png").read_bytes() == (second / "scaling.png").read_bytes()
    nothing = tmp_path / "none"
    nothing.mkdir()
    write_run(nothing, "SGD", 64, 0.1, 0, None)
    df = collect(nothing)
    assert SCALING.figures(spec, SCALING.build(spec, df), df, nothing) == []  # 1 trial: no tuning curve


def test_make_tables_writes_the_scaling_outputs(spec, runs: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    main = build.main
    assert main(["--table", str(spec.path), "--source", str(runs), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["RUN.md", "runs", "scaling.csv", "scaling.md", "scaling.png",
                                                     "tuning_curve.png"]
    assert len(list((out / "runs").iterdir())) == 3 * 4 * 2 * 2 - 2 * 2 + 2  # AdamW @ 256 none; 2 stray targets
    first = {name: (out / name).read_bytes() for name in ("scaling.md", "scaling.csv", "scaling.png",
                                                          "tuning_curve.png", "RUN.md")}
    assert main(["--table", str(spec.path), "--out", str(out), "--source", str(out / "runs")]) == 0
    assert {name: (out / name).read_bytes() for name in first} == first  # the records rebuild the same bytes
    assert "scaling.md" in capsys.readouterr().out


def test_comparison_with_the_committed_scaling_table(spec, runs: Path) -> None:
    table = SCALING.build(spec, collect(runs))
    committed = table.files["scaling.csv"]
    assert "12 same value" in SCALING.compare(committed, table)
    lines = list(csv.DictReader(io.StringIO(committed)))
    lines[0]["steps_mean"] = "112.0"  # within the seeds' spread (100, 120)
    lines[4]["steps_mean"], lines[4]["steps_std"] = "400.0", "1.0"  # LARS @ 64: far from 206.25
    lines[3]["status"] = "ok"  # SGD @ 512 was reached before
    report = SCALING.compare(csv_text(list(lines[0]), [line.values() for line in lines]), table)
    assert "9 same value, 1 within seed noise, 2 different" in report
    assert "- SGD @ B=64: within seed noise (112.00 → 110.00, Welch p = " in report
    assert "- LARS @ B=64: different (400.00 → 206.25, Welch p = " in report
    assert "- SGD @ B=512: different (ok → not_reached)" in report


def test_the_spec_names_its_kind(spec) -> None:
    assert KINDS[spec.kind] is SCALING and SCALING.csv == "scaling.csv"
    assert KINDS[load_spec("fmnist-mini").kind] is ACCURACY


# --------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_scaling_sweep_end_to_end(profile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny scaling study through tvlars.tables.reproduce: search, confirmation (full profile), scaling.md/.csv/.png
    with the records; a rerun launches nothing and compares every cell equal."""
    from tests.helpers import TINY

    base = [o for o in TINY if not o.startswith(("batch_size", "epochs"))] + [
        "epochs=2", "checkpoint_every=0", "dataset.val_size=64", "target.metric=val_top1", "target.value=30",
        "target.stop=true", "eval_every_steps=2"]
    def row(label: str, optimizer: str, low: float, high: float) -> dict[str, Any]:
        return {"label": label, "overrides": [f"optimizer={optimizer}"],
                "search": {"trials": 2, "space": {"optimizer.lr": {"log": [low, high]}}}}

    path = tmp_path / "scal.yaml"
    path.write_text(json.dumps({"kind": "scaling", "title": "tiny scaling", "seeds": [0], "confirm_seeds": [1, 2],
                                "min_steps": 0, "columns": {"key": "batch_size", "values": [32, 64, 128]}, "base": base,
                                "smoke": ["target.value=5"],
                                "rows": [row("SGD", "sgd", 0.05, 0.5), row("AdamW", "adamw", 0.001, 0.01)]}))
    args = ["--table", str(path), "--launcher", "basic", "--profile", profile, "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    assert reproduce.main(args) == 0
    runs = tmp_path / "runs" / ("smoke/scal" if profile == "smoke" else "scal")
    results = runs / "results" if profile == "smoke" else tmp_path / "results" / "scal"
    assert {"scaling.md", "scaling.csv", "runs"} <= {p.name for p in results.iterdir()}
    assert not (results / "table.md").exists()
    md = (results / "scaling.md").read_text()
    assert f"optimizer steps until `val_top1` reaches {5 if profile == 'smoke' else 30} " in md
    cells = list(csv.DictReader(io.StringIO((results / "scaling.csv").read_text())))
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    if profile == "smoke":  # 2 rows × 2 batch sizes × the first trial × seed 0; a target of 5 % is always reached
        assert len(summaries) == 4 and all(s["steps_to_target"] for s in summaries)
        assert {c["status"] for c in cells} == {"ok"} and (results / "scaling.png").is_file()
    else:  # 2 rows × 3 batch sizes × 2 trials × seed 0, then seeds 1 and 2 at each cell's chosen trial
        chosen = [c for c in cells if c["chosen_point"]]
        assert len(summaries) == 2 * 3 * 2 + 2 * len(chosen)
        assert all(c["n_seeds"] == "2" for c in chosen)
    assert len(list((results / "runs").iterdir())) == len(summaries)
    capsys.readouterr()
    assert reproduce.main(args) == 0  # everything is done: nothing launches, every cell equals the committed one
    out = capsys.readouterr().out
    assert "to run: 0 jobs" in out and f"{len(cells)} same value" in out
