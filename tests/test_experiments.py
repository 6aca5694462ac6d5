"""Experiment specs: quasi-random search spaces, equal budgets, compare rows, chance, confirmation jobs, and the
planner's rerun rule (tvlars.spec, tvlars.sweep); no training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tvlars.errors import UserError
from tvlars.spec import load_spec, smoke_spec
from tvlars.sweep import plan, write_job_files

SEARCH = """
title: search
columns: {key: batch_size, values: [16, 32]}
seeds: [0]
confirm_seeds: [1, 2, 3]
chance: 10.0
compare: {method: [b], no_warmup: [a]}
rows:
  - label: a
    overrides: [optimizer=sgd]
    search: {trials: 8, space: {optimizer.lr: {log: [0.01, 1.0]}}}
  - label: b
    overrides: [optimizer=sgd]
    search:
      trials: 8
      space:
        optimizer.lr: {16: {log: [0.1, 0.4]}, 32: {log: [1, 4]}}
        optimizer.momentum: {linear: [0.8, 0.99]}
        optimizer.nesterov: [true, false]
"""


def write(tmp_path: Path, text: str, name: str = "search") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_search_trials_are_deterministic_and_inside_the_space(tmp_path: Path) -> None:
    first, second = load_spec(write(tmp_path, SEARCH)), load_spec(write(tmp_path, SEARCH))
    for column in (16, 32):
        assert [r.points(column) for r in first.rows] == [r.points(column) for r in second.rows]
        assert len(first.rows[0].points(column)) == 8
    assert [j.overrides for j in first.jobs()] == [j.overrides for j in second.jobs()]
    a, b = first.rows
    lrs = [p["optimizer.lr"] for p in a.points(16)]
    assert all(0.01 <= lr < 1.0 for lr in lrs) and len(set(lrs)) == 8
    assert all(float(f"{lr:.3g}") == lr for lr in lrs)  # rounded to 3 significant digits
    # log-uniform: a quasi-random design puts half of the trials in each half of the log range
    assert sum(math.log10(lr) < -1 for lr in lrs) == 4
    assert all(0.1 <= p["optimizer.lr"] < 0.4 for p in b.points(16))
    assert all(1 <= p["optimizer.lr"] < 4 for p in b.points(32))  # per-column ranges
    assert all(0.8 <= p["optimizer.momentum"] < 0.99 for p in b.points(16))
    assert {p["optimizer.nesterov"] for p in b.points(16)} == {True, False}
    # another spec name, or an explicit search seed, gives another design
    other = load_spec(write(tmp_path, SEARCH, "other"))
    assert other.rows[0].points(16) != a.points(16)
    seeded = load_spec(write(tmp_path, SEARCH.replace("trials: 8, space", "trials: 8, seed: 1, space")))
    assert seeded.rows[0].points(16) != a.points(16)


def test_budget_and_confirmation(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, SEARCH))
    assert spec.budget(spec.rows[0]) == 8 and spec.runs_per_cell(spec.rows[0]) == 8 + 3
    assert len(spec.jobs()) == 2 * 2 * 8 and spec.reported_seeds == [1, 2, 3]
    chosen = {("b", 16): spec.rows[1].points(16)[3]}
    jobs = spec.confirm_jobs(chosen)
    assert [j.seed for j in jobs] == [1, 2, 3] and all(j.point == chosen[("b", 16)] for j in jobs)
    assert "batch_size=16" in jobs[0].overrides and "seed=3" in jobs[2].overrides
    smoke = smoke_spec(spec, "/data")
    assert smoke.confirm_seeds == [] and smoke.rows[1].points(16) == [spec.rows[1].points(16)[0]]
    assert smoke.profile == "smoke" and smoke.display_title == "search [smoke]"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s.replace("trials: 8, space: {optimizer.lr: {log: [0.01, 1.0]}}",
                             "trials: 4, space: {optimizer.lr: {log: [0.01, 1.0]}}"),
         "unequal tuning budgets at 16 (a 4, b 8 points per cell)"),
        (lambda s: s.replace("{log: [0.01, 1.0]}", "{log: [0, 1.0]}"), "must be {log: [lo, hi]} (0 < lo < hi)"),
        (lambda s: s.replace("{log: [0.01, 1.0]}", "{uniform: [0.01, 1.0]}"), "space optimizer.lr must be"),
        (lambda s: s.replace("{16: {log: [0.1, 0.4]}, 32: {log: [1, 4]}}", "{16: {log: [0.1, 0.4]}}"),
         "space optimizer.lr has no range for 32"),
        (lambda s: s.replace("trials: 8, space", "trials: 0, space"), "search.trials must be a positive integer"),
        (lambda s: s.replace("search: {trials: 8, space", "grid: {optimizer.lr: [1]}\n    search: {trials: 8, space"),
         "gives both a grid and a search"),
        (lambda s: s.replace("{log: [0.01, 1.0]}", "[0.1, 0.2]"), "include duplicate points"),
        (lambda s: s.replace("method: [b]", "method: [c]"), "compare.method names 'c', not a row label"),
        (lambda s: s.replace("no_warmup: [a]", "no_warmup: [b]"), "no_warmup must list baselines only"),
        (lambda s: s.replace("chance: 10.0", "chance: 100"), "chance must be the chance-level accuracy"),
        (lambda s: s.replace("confirm_seeds: [1, 2, 3]", "confirm_seeds: [1, 1]"), "confirm_seeds must be a list"),
        (lambda s: s.replace("confirm_seeds: [1, 2, 3]", "confirm_seeds: [0, 1, 2]"),
         "confirm_seeds [0, 1, 2] include search seed(s) [0]: the search run would be reported as its own "
         "confirmation; use seeds the search did not run (e.g. [1, 2, 3])"),
        (lambda s: s + "select_on: train\n", "select_on must be one of ('val', 'test')"),
        (lambda s: s + "metric: best_test_top1\n", "metric best_test_top1 reports the best test epoch, which is "
         "chosen on test; use final_test_top1 (chosen on validation), or select_on: test"),
        (lambda s: s + "min_steps: -1\n", "min_steps must be an integer >= 0"),
        (lambda s: s + "reuse_search_seeds: 1\n", "reuse_search_seeds must be true or false"),
    ],
)
def test_bad_search_specs_fail_with_one_line(edit, needle: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="^experiment spec search: ") as info:
        load_spec(write(tmp_path, edit(SEARCH)))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_selection_protocol_keys(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, SEARCH))
    assert (spec.select_on, spec.selection_metric, spec.metric) == ("val", "final_val_top1", "final_test_top1")
    legacy = load_spec(write(tmp_path, SEARCH.replace("confirm_seeds: [1, 2, 3]", "confirm_seeds: [0, 1, 2]")
                             + "select_on: test\nreuse_search_seeds: true\nmetric: best_test_top1\n"))
    assert legacy.selection_metric == "best_test_top1" and legacy.reported_seeds == [0, 1, 2]


SHORT = """
title: short
base: [dataset=synthetic, dataset.num_train=1024, epochs=2]
columns: {key: batch_size, values: [32, 64]}
seeds: [0]
rows:
  - label: warm
    overrides: [optimizer=sgd, schedule=warmup_cosine, schedule.warmup_epochs=0.5]
    grid: {optimizer.lr: [0.1]}
"""


def test_plan_refuses_too_few_steps_and_a_warmup_that_hardly_exists(tmp_path: Path) -> None:
    """1024 images are 32 steps per epoch at B = 32, 16 at B = 64: a 0.5-epoch warm-up is 16 and 8 steps, and two
    epochs at B = 64 are 32 steps; each is refused in one line naming the cell, until the spec accepts it."""
    with pytest.raises(UserError) as info:
        plan(load_spec(write(tmp_path, SHORT, "short")), tmp_path / "runs")
    assert str(info.value).startswith("table short, row 'warm', batch_size=64: 32 optimizer steps (2 epoch(s) × 16 "
                                      "steps of 64 images) are too few to compare schedules (min_steps: 50)")
    with pytest.raises(UserError) as info:
        plan(load_spec(write(tmp_path, SHORT + "min_steps: 32\n", "short")), tmp_path / "runs")
    assert "batch_size=64: schedule.warmup_epochs=0.5 is a warm-up of 8 optimizer step(s) at 16 steps per epoch, " \
           "fewer than 10" in str(info.value) and str(info.value).endswith("or set min_warmup_steps: 0 in " +
                                                                         str(tmp_path / "short.yaml") + " to accept it")
    accepted = load_spec(write(tmp_path, SHORT + "min_steps: 32\nmin_warmup_steps: 8\n", "short"))
    assert len(plan(accepted, tmp_path / "r")) == 2


def _record(run_dir: Path, summary: bytes) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_bytes(summary)


def test_rerun_launches_only_failed_running_and_missing_jobs(tmp_path: Path) -> None:
    text = SEARCH.replace("confirm_seeds: [0, 1, 2]\n", "").replace("trials: 8", "trials: 2")
    spec = load_spec(write(tmp_path, text))
    runs = tmp_path / "runs"
    planned = plan(spec, runs)
    statuses = ["completed", "diverged", "failed", "running", "corrupt", "binary", "no-status"]
    for p, status in zip(planned, statuses, strict=False):
        body = {"corrupt": b"[1, 2]", "binary": b"\xff\xfe\x00garbage", "no-status": b'{"status": 3}'}.get(
            status, json.dumps({"status": status, "error": "RuntimeError: boom"}).encode())
        _record(p.run_dir, body)
    again = plan(spec, runs)  # binary or wrongly typed summaries must not crash the planner
    assert [p.status for p in again[:7]] == ["completed", "diverged", "failed", "running", "corrupt", "corrupt",
                                             "corrupt"]
    assert {p.status for p in again[7:]} == {"pending"}
    launched = write_job_files(spec, again, tmp_path / "jobs")
    assert launched == len(again) - 5  # completed, diverged and the 3 corrupt records are left alone
    listed = json.loads((tmp_path / "jobs" / "plan.json").read_text())
    assert [p["status"] for p in listed[:3]] == ["completed", "diverged", "failed"]


@pytest.mark.slow
def test_search_confirmation_and_comparison_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny search table with confirmation seeds through tvlars.reproduce: search sweep, confirmation sweep,
    table of the confirmation seeds, records beside it; a rerun launches nothing and compares equal."""

    from tests.helpers import TINY

    base = [o for o in TINY if not o.startswith(("batch_size", "epochs"))] + ["epochs=1", "checkpoint_every=0",
                                                                              "dataset.val_size=64"]
    spec = write(tmp_path, f"""
title: tiny search
columns: {{key: batch_size, values: [64]}}
seeds: [0]
confirm_seeds: [1, 2]
min_steps: 3
chance: 10.0
base: {json.dumps(base)}
compare: {{method: [b], baselines: [a]}}
rows:
  - {{label: a, overrides: [optimizer=sgd], search: {{trials: 2, space: {{optimizer.lr: {{log: [0.01, 0.1]}}}}}}}}
  - {{label: b, overrides: [optimizer=adamw], search: {{trials: 2, space: {{optimizer.lr: {{log: [0.001, 0.01]}}}}}}}}
""", "tiny")
    from tvlars import reproduce

    args = ["--table", str(spec), "--launcher", "basic", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    assert reproduce.main(args) == 0
    table = (tmp_path / "results" / "tiny" / "table.md").read_text()
    assert "mean ± std over 2 seed(s) (confirmation runs of the chosen point)" in table
    assert "None: every expected run finished" in table
    summaries = list((tmp_path / "runs" / "tiny").glob("*/summary.json"))
    assert len(summaries) == 2 * 2 + 2 * 2  # 2 rows × 2 trials × seed 0, then seeds 1, 2 at each chosen point
    assert len(list((tmp_path / "results" / "tiny" / "runs").iterdir())) == 8
    capsys.readouterr()
    assert reproduce.main(args) == 0  # everything is done: nothing launches, every cell equals the committed one
    out = capsys.readouterr().out
    assert "to run: 0 jobs" in out and "0 run(s) to go now" in out and "2 same value" in out


CLAIMS = """
title: claims
columns: {key: batch_size, values: [16]}
seeds: [0]
rows:
  - {label: a, overrides: [optimizer=sgd]}
  - {label: b, overrides: [optimizer=adamw]}
claims:
  - {a: a, b: b, question: "is a b?", margin: 1.0}
"""


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s.replace("b: b,", "b: c,"), "claims name 'c', not a row label (rows: a, b)"),
        (lambda s: s.replace("b: b,", "b: a,"), "claim 'is a b?' compares row 'a' with itself"),
        (lambda s: s.replace("margin: 1.0", "margin: -1"), "claim 'a' vs 'b': margin must be a positive number"),
        (lambda s: s.replace('question: "is a b?"', 'question: ""'), "claim 'a' vs 'b': question must be a non-empty"),
        (lambda s: s.replace(", margin: 1.0}", ", by: 1.0}"), "claims must be a list of {a: <row label>, b: <row "
                                                             "label>, question: <text>, margin: <points, optional>}"),
        (lambda s: s.replace("claims:\n  - ", "claims: "), "claims must be a list of"),
        (lambda s: s + "kind: scaling\n", "claims applies to accuracy tables"),
    ],
)
def test_named_claims_are_checked_at_load(edit, needle: str, tmp_path: Path) -> None:
    assert [(c.a, c.b, c.question, c.margin) for c in load_spec(write(tmp_path, CLAIMS, "claims")).claims] == [
        ("a", "b", "is a b?", 1.0)]
    with pytest.raises(UserError, match="^experiment spec claims: ") as info:
        load_spec(write(tmp_path, edit(CLAIMS), "claims"))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_the_warmup_study_names_its_claims() -> None:
    spec = load_spec("fmnist-warmup")
    assert [(c.a, c.b, c.margin) for c in spec.claims] == [
        ("TVLARS", "LARS + warm-up", 1.0), ("TVLARS", "LARS + cosine, no warm-up", None),
        ("TVLARS", "LARS + φ(t) schedule", 1.0), ("LARS + warm-up", "LARS + cosine, no warm-up", 1.0),
        ("LAMB + warm-up", "LAMB + cosine, no warm-up", 1.0)]


def test_a_discussion_quotes_design_numbers_only(tmp_path: Path) -> None:
    """The spec's numbers (columns, trials, ranges, seeds, chance) may be quoted, names with digits are no numbers;
    a measured number is refused with one line that names it."""
    design = ("discussion: |\n  At B = 16 and B = 32 (8 trials, lr from 0.01, seeds 1, 2 and 3) row b beats a in "
              "top-1 on CIFAR-10 with ResNet-18 (log10 steps, v2-v5); chance is 10.0 %.\n")
    spec = load_spec(write(tmp_path, SEARCH + design))
    assert spec.discussion.startswith("At B = 16") and spec.discussion.endswith("10.0 %.")
    assert load_spec(write(tmp_path, SEARCH)).discussion == ""  # optional
    for measured, named in (("b reaches 87.3 % at B = 32", "87.3"), ("b trails by −1.33 points", "1.33"),
                            ("p = 0.048 at B=16, 3.6x fewer steps", "0.048, 3.6"), ("b peaks at step 2e3", "2e3")):
        with pytest.raises(UserError, match="^experiment spec search: discussion quotes ") as info:
            load_spec(write(tmp_path, SEARCH + f"discussion: {measured}\n"))
        assert f"quotes {named}, not a number of the spec" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="discussion must be a text"):
        load_spec(write(tmp_path, SEARCH + "discussion: [1]\n"))


def test_a_discussion_is_not_inherited(tmp_path: Path) -> None:
    """``extends`` inherits the parent's keys but not its discussion, which reads the parent's records."""
    assert load_spec("cifar10-mini").discussion
    child = write(tmp_path, "extends: cifar10-mini\ntitle: another study\n", "child")
    assert load_spec(child).discussion == ""
