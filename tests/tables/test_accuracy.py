"""Tables and figures from synthetic run records (tvlars.tables); no training."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tvlars.tables.collect as collect_module
from tests.tables.studies import study_fixtures
from tvlars.tables import build, figures
from tvlars.tables.collect import collect
from tvlars.tables.kinds import accuracy
from tvlars.tables.kinds.accuracy import ACCURACY, tex_escape
from tvlars.tables.lr_schedule import describe_schedule
from tvlars.tables.render import format_point
from tvlars.tables.spec import load_spec

SPEC = """\
title: Fashion-MNIST mini table
claim: TVLARS beats LARS without warm-up at large batch sizes.
columns: {key: batch_size, values: [512, 1024]}
seeds: [0, 1]
metric: best_test_top1
select_on: test
rows:
  - label: LARS (no warm-up)
    overrides: [optimizer=lars]
    grid: {optimizer.lr: [1, 2]}
  - label: LARS + warm-up
    overrides: [optimizer=lars, schedule=warmup_cosine]
    grid: {optimizer.lr: [1, 2]}
  - label: TVLARS
    overrides: [optimizer=tvlars]
    grid: {optimizer.lr: [1], optimizer.lam: [1.0e-3, 1.0e-2]}
compare: {method: [TVLARS], no_warmup: [LARS (no warm-up)]}
notes: Synthetic numbers for the tests.
"""


def write_run(root: Path, row: str, column: int, point: dict[str, Any], seed: int, best: float | None = None,
              status: str = "completed", table: str = "mini", epochs: int = 3, trust: bool = False,
              optimizer: dict[str, Any] | None = None, error: str | None = None,
              num_classes: int | None = 10, schedule: dict[str, Any] | None = None, **fields: Any) -> Path:
    """One run directory as tvlars.train writes it: summary.json, metrics.jsonl, optionally trust.jsonl. ``best`` is
    the best test top-1; the final test top-1 is 1 point lower, the final validation top-1 0.5; ``fields`` are more
    summary fields (or replace these). The schedule defaults to a constant LR."""
    run_dir = root / f"{table}-{row}-{column}-{json.dumps(point, sort_keys=True)}-{seed}".replace(" ", "_")
    run_dir.mkdir(parents=True)
    curve = [(best or 50.0) * (e + 1) / epochs for e in range(epochs)]
    rows = [{"epoch": e + 1, "step": 10 * (e + 1), "lr": 1.0, "train_loss": 1.0 / (e + 1), "train_images_per_s": 99.0,
             "test_top1": acc, "test_top5": 99.0, "test_loss": 0.5} for e, acc in enumerate(curve)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if trust:
        snaps = [{"layers": ["conv.weight", "fc.weight", "fc.bias"]}]
        snaps += [{"step": s, "epoch": 1 + s // 10, "trust_ratio": [1e-3 * s, 2e-3, 1.0], "weight_norm": [1.0] * 3,
                   "update_norm": [1.0] * 3, **({"phi": 1 / s} if optimizer else {})} for s in (5, 10, 15, 20)]
        (run_dir / "trust.jsonl").write_text("".join(json.dumps(r) + "\n" for r in snaps))
    optimizer = optimizer or {"_target_": "tvlars.optim.LARS", "lr": point.get("optimizer.lr", 1.0)}
    summary = {"status": status, "run_id": run_dir.name, "run_dir": str(run_dir), "seed": seed,
               "config": {"optimizer": optimizer, "schedule": schedule or {"_target_": "tvlars.schedules.Constant"},
                          "batch_size": column, "epochs": epochs, "seed": seed,
                          "task": {"_target_": "tvlars.tasks.Classification"},
                          "labels": {"table": table, "row": row, "column": column, "point": point}},
               "steps_per_epoch": 10, "lr": 1.0, "best_test_top1": best if best is not None else float("nan"),
               "final_test_top1": (best if best is not None else float("nan")) - 1.0,
               "final_val_top1": (best if best is not None else float("nan")) - 0.5, "best_test_top5": 99.0,
               "final_test_top5": 98.0, "images_per_s": 1000.0, "wall_time_s": 12.0, "epochs_completed": epochs,
               "error": error, **({"num_classes": num_classes} if num_classes else {}), **fields}
    (run_dir / "summary.json").write_text(json.dumps(summary))  # NaN written as in tvlars.records
    return run_dir


def main_table(markdown: str) -> str:
    """The main table of a table.md: its lines from the header row to the first blank line."""
    return markdown[markdown.index("| Method"):].split("\n\n")[0]


TV = {"_target_": "tvlars.optim.tvlars.tvlars_from_epochs", "lr": 1.0, "alpha": 1.0, "delay_epochs": 1.0,
      "gamma_min": 0.001}


def write_table_runs(root: Path) -> Path:
    """A table with every kind of record: selection traps, divergence, gaps, corrupt and foreign runs."""
    nw = "LARS (no warm-up)"
    # B=512: lr=2 has the best single seed (95) but the worse mean (95, 70) -> lr=1 (85, 83) wins.
    for seed, acc in ((0, 85.0), (1, 83.0)):
        write_run(root, nw, 512, {"optimizer.lr": 1}, seed, acc, trust=True)
    for seed, acc in ((0, 95.0), (1, 70.0)):
        write_run(root, nw, 512, {"optimizer.lr": 2}, seed, acc, trust=True)
    # B=1024: every no-warm-up run diverged.
    for lr in (1, 2):
        for seed in (0, 1):
            write_run(root, nw, 1024, {"optimizer.lr": lr}, seed, None, status="diverged")
    # LARS + warm-up: B=512 complete (single point 'lr=1' string from Hydra), B=1024 nothing at all.
    for lr, accs in ((1, (88.0, 87.0)), (2, (80.0, 81.0))):
        for seed, acc in zip((0, 1), accs, strict=True):
            write_run(root, "LARS + warm-up", 512, {"optimizer.lr": str(lr)}, seed, acc)
    # TVLARS: B=512 complete; B=1024 one seed running, one failed, one missing, one completed.
    for lam, accs in ((1e-3, (90.0, 89.0)), (1e-2, (86.0, 86.5))):
        for seed, acc in zip((0, 1), accs, strict=True):
            write_run(root, "TVLARS", 512, {"optimizer.lr": 1, "optimizer.lam": lam}, seed, acc, trust=True,
                      optimizer={**TV, "lam": lam})
    write_run(root, "TVLARS", 1024, {"optimizer.lr": 1, "optimizer.lam": 1e-3}, 0, 80.0, optimizer={**TV, "lam": 1e-3})
    write_run(root, "TVLARS", 1024, {"optimizer.lr": 1, "optimizer.lam": 1e-3}, 1, None, status="running")
    write_run(root, "TVLARS", 1024, {"optimizer.lr": 1, "optimizer.lam": 1e-2}, 0, None, status="failed")
    # Noise: another table, an SSL linear_eval sub-run, a corrupt and an empty summary.
    write_run(root, "TVLARS", 512, {"optimizer.lr": 1, "optimizer.lam": 1e-3}, 0, 99.9, table="other")
    parent = write_run(root, "LARS + warm-up", 1024, {"optimizer.lr": 1}, 5, 10.0, table="other")
    follow_up = write_run(parent, "LARS + warm-up", 1024, {"optimizer.lr": 1}, 0, 99.0)
    summary = json.loads((follow_up / "summary.json").read_text())
    summary["config"]["labels"] = {"follow_up_of": parent.name}  # as tvlars.run labels a follow-up run
    (follow_up / "summary.json").write_text(json.dumps(summary))
    follow_up.rename(parent / "linear_eval")
    for name, text in (("corrupt", '{"status": "compl'), ("empty", "")):
        (root / name).mkdir()
        (root / name / "summary.json").write_text(text)
    return root


spec, runs = study_fixtures(SPEC, "mini", write_table_runs)


def test_collect_directory(runs: Path) -> None:
    df = collect(runs)
    assert len(df) == 23  # linear_eval/ skipped
    assert set(df["status"]) == {"completed", "diverged", "running", "failed", "corrupt"}
    assert (df["status"] == "corrupt").sum() == 2
    mine = df[df["table"] == "mini"]
    assert mine["point"].str.startswith("{").all()
    # '2' (string from Hydra) and 2 (int) give the same canonical point
    assert json.loads(mine.loc[mine["row"] == "LARS + warm-up", "point"].iloc[0]) in ({"optimizer.lr": 1.0},
                                                                                       {"optimizer.lr": 2.0})
    assert mine.loc[mine["status"] == "diverged", "best_test_top1"].isna().all()


def test_collect_bad_source(tmp_path: Path) -> None:
    from tvlars.errors import UserError

    with pytest.raises(UserError, match="not a directory"):
        collect(tmp_path / "nope")
    assert collect(tmp_path).empty


def test_selection_and_cells(spec, runs: Path) -> None:
    table = ACCURACY.build(spec, collect(runs))
    cells = table.cells
    nw512 = cells[("LARS (no warm-up)", 512)]
    assert nw512.status == "ok" and nw512.point == {"optimizer.lr": 1}  # best mean, not the best single seed (95)
    assert nw512.mean == pytest.approx(84.0) and nw512.std == pytest.approx(math.sqrt(2.0)) and nw512.n == 2
    assert cells[("LARS (no warm-up)", 1024)].status == "diverged"
    assert cells[("LARS + warm-up", 1024)].status == "missing"
    assert cells[("LARS + warm-up", 512)].point == {"optimizer.lr": 1}
    tv = cells[("TVLARS", 512)]
    assert tv.point == {"optimizer.lr": 1, "optimizer.lam": 1e-3} and tv.mean == pytest.approx(89.5)
    tv1024 = cells[("TVLARS", 1024)]
    assert tv1024.n == 1 and math.isnan(tv1024.std) and tv1024.expected == 2

    md = table.markdown
    assert "| Method | LR schedule | Budget (runs/cell) | B=512 | B=1024 |" in md
    assert "| LARS (no warm-up) | constant | 4 | 84.00 ± 1.41 | div |" in md
    assert "| LARS + warm-up | constant | 4 | 87.50 ± 0.71 | – |" in md
    # Not bold: 89.50 ± 0.71 vs the runner-up 87.50 ± 0.71 is p = 0.11 (Welch, 2 seeds); 80.00 has one seed.
    # The LR column: the schedule of the records' configs, with the optimizer class's lr_factor (TVLARS).
    assert "| TVLARS | constant, φ(t) on the trust ratio | 4 | 89.50 ± 0.71 | 80.00 (n=1/2)‡ |" in md
    assert "**" not in main_table(md) and "over this table's 1 such test(s)" in md
    assert "lr=1, lam=0.001" in md and "B=512" in md
    assert "Budget: every row had 2 grid point(s) × 2 seed(s) = 4 runs per cell." in md
    assert "Selection rule: chosen on test (best-epoch test top-1, search seeds 0, 1), reported on test over the " \
           "same seeds 0, 1 (no confirmation runs)." in md and "Synthetic numbers for the tests." in md
    assert "**Warning: each cell's point was chosen on the test set that the cell reports (`select_on: test`), so " \
           "the cells are optimistic" in md  # the spec selects on test
    assert "## Train top-1" not in md and "## BatchNorm lag" not in md  # the records have neither field
    assert "99.9" not in md  # the other table's run is ignored
    problems = "\n".join(table.problems)
    assert "unreadable summary.json" in problems and "corrupt" in problems and "empty" in problems
    assert "LARS + warm-up @ B=1024: 0 of 4 runs finished" in problems
    assert "TVLARS @ B=1024: 1 of 4 runs finished" in problems and "1 running" in problems
    assert "1 failed" in problems and "1 missing (lr=1, lam=0.01 seed 1)" in problems
    assert "TVLARS @ B=1024: lr=1, lam=0.01 seed 0 failed: no error recorded in summary.json" in problems


PROTOCOL = """\
title: protocol
columns: {key: batch_size, values: [256, 1024]}
seeds: [0]
confirm_seeds: [1, 2]
chance: 10.0
rows:
  - label: SGD
    overrides: [optimizer=sgd, schedule=warmup_cosine]
    search: {trials: 3, space: {optimizer.lr: {log: [0.01, 1.0]}}}
"""


def test_chosen_on_validation_reported_on_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default protocol: each cell's trial is chosen by final validation top-1, its confirmation runs report test
    top-1, train top-1 and the BatchNorm lag; the LR schedule of the records; the edge of the searched range."""
    (tmp_path / "protocol.yaml").write_text(PROTOCOL)
    spec = load_spec(tmp_path / "protocol.yaml")
    root = tmp_path / "runs"
    for column, warmup in ((256, 1.0), (1024, 0.5)):  # 10 steps per epoch: 10 and 5 warm-up steps
        schedule = {"_target_": "tvlars.schedules.WarmupCosine", "warmup_epochs": warmup, "floor": 0.001}
        trials = spec.rows[0].points(column)
        top = max(trials, key=lambda p: p["optimizer.lr"])
        for point in trials:  # test top-1 prefers every other trial; validation prefers the largest LR
            write_run(root, "SGD", column, point, 0, 60.0 if point == top else 90.0, table="protocol",
                      schedule=schedule, final_val_top1=80.0 if point == top else 70.0)
        for seed, best in ((1, 60.0), (2, 62.0)):
            write_run(root, "SGD", column, top, seed, best, table="protocol", schedule=schedule,
                      final_train_top1=97.0 + 2 * (seed == 1), final_test_top1_rawbn=best - 10.0)
    table = ACCURACY.build(spec, collect(root))
    cell = table.cells[("SGD", 256)]
    assert cell.point["optimizer.lr"] == max(p["optimizer.lr"] for p in spec.rows[0].points(256))
    assert sorted(cell.trials) == [70.0, 70.0, 80.0] and cell.values == [59.0, 61.0]  # reported: final test top-1
    assert cell.edges == [("optimizer.lr", "largest")] and cell.train == [99.0, 97.0] and cell.bn_lag == [9.0, 9.0]
    md = table.markdown
    assert "Selection rule: chosen on validation (final-epoch validation top-1, search seed 0), reported on test " \
           "over confirmation seeds 1, 2." in md
    assert "Warning" not in md and "reuse_search_seeds" not in md
    assert "| SGD | per column (below) | 5 | 60.00 ± 1.41▸ | 60.00 ± 1.41▸ |" in md
    assert "## LR schedule per cell\n\n| Method | B=256 | B=1024 |\n|---|---|---|\n| SGD | linear warm-up 10 steps " \
           "+ cosine to 0.001× | linear warm-up 5 steps + cosine to 0.001× |" in md
    assert "SGD @ B=256: optimizer.lr largest; SGD @ B=1024: optimizer.lr largest." in md
    assert "## Train top-1 of the reported runs" in md and "| SGD | 98.00 ± 1.41 | 98.00 ± 1.41 |" in md
    assert "## BatchNorm lag" in md and "| SGD | 9.00 | 9.00 |" in md
    assert r"60.00 $\pm$ 1.41$^\triangleright$" in table.files["table.tex"]

    drawn: dict[str, tuple[list[Any], str, str]] = {}  # figure -> its panels, y label and title

    def save(fig: Any, axes: list[Any], ylabel: str, title: str, path: Path, **_: Any) -> list[Path]:
        drawn[path.name] = axes, ylabel, title
        return [path]

    for module in (accuracy, figures):  # the accuracy figures' and the tuning curve's
        monkeypatch.setattr(module, "save", save)
    ACCURACY.draw(spec, table, collect(root), tmp_path / "figures")
    axes, ylabel, title = drawn["tuning_curve.png"]
    assert ylabel == "best so far: final-epoch validation top-1 (%)" and "chosen on validation" in title
    markers = [line.get_marker() for ax in axes for line in ax.lines]
    assert markers.count(">") == 3 and "<" not in markers  # one per panel, one legend entry
    assert "chosen point: the largest value of a searched range (too narrow to show an optimum)" in \
        axes[0].get_legend_handles_labels()[1]


def test_the_lr_schedule_of_a_record() -> None:
    """The schedule node as the run built it (12 steps per epoch, 20 epochs), plus the optimizer class's lr_factor."""
    config = {"epochs": 20, "optimizer": {"_target_": "tvlars.optim.LARS"},
              "schedule": {"_target_": "tvlars.schedules.WarmupCosine", "warmup_epochs": 4, "floor": 0.001}}
    assert describe_schedule(config, 2.0, 12) == "linear warm-up 48 steps + cosine to 0.001×"
    phi = {**config, "schedule": {"_target_": "tvlars.schedules.Phi", "lam": 0.05, "delay_epochs": 2}}
    assert describe_schedule(phi, 2.0, 12) == "φ(t) (λ=0.05, centre 24 steps)"
    tvlars = {"epochs": 20, "optimizer": TV, "schedule": {"_target_": "tvlars.schedules.Constant"}}
    assert describe_schedule(tvlars, 2.0, 12) == "constant, φ(t) on the trust ratio"  # a factory of the class too
    for broken in ({}, {**config, "schedule": {"_target_": "tvlars.schedules.Gone"}}, {**config, "epochs": None}):
        assert describe_schedule(broken, 2.0, 12) == ""  # records this build cannot describe
    assert describe_schedule(config, 2.0, math.nan) == ""


def test_divergence_duplicates_and_strays(tmp_path: Path) -> None:
    # Budgets must be equal (the loader refuses others), so every row gets a third point.
    (tmp_path / "t.yaml").write_text(SPEC.replace("grid: {optimizer.lr: [1, 2]}", "grid: {optimizer.lr: [1, 2, 3]}")
                                     .replace("[1.0e-3, 1.0e-2]", "[1.0e-3, 1.0e-2, 1.0e-1]"))
    spec = load_spec(tmp_path / "t.yaml")
    root, nw = tmp_path / "runs", "LARS (no warm-up)"
    write_run(root, nw, 512, {"optimizer.lr": 1}, 0, 80.0, table="t")
    write_run(root, nw, 512, {"optimizer.lr": 1}, 1, 82.0, table="t")
    write_run(root / "again", nw, 512, {"optimizer.lr": 1}, 1, None, status="failed", table="t")  # duplicate
    write_run(root, nw, 512, {"optimizer.lr": 2}, 0, 95.0, table="t")  # best mean, but a seed diverged
    write_run(root, nw, 512, {"optimizer.lr": 2}, 1, None, status="diverged", table="t")
    write_run(root, nw, 512, {"optimizer.lr": 9}, 0, 99.0, table="t")  # not in the grid
    write_run(root, nw, 4096, {"optimizer.lr": 1}, 0, 99.0, table="t")  # not a column
    write_run(root, "SGD", 512, {"optimizer.lr": 1}, 0, 99.0, table="t")  # not a row
    # B=1024: only a partly diverged point exists -> chosen, marked †
    write_run(root, nw, 1024, {"optimizer.lr": 3}, 0, 70.0, table="t")
    write_run(root, nw, 1024, {"optimizer.lr": 3}, 1, None, status="diverged", table="t")
    table = ACCURACY.build(spec, collect(root))
    clean, partial = table.cells[(nw, 512)], table.cells[(nw, 1024)]
    assert clean.point == {"optimizer.lr": 1} and clean.mean == pytest.approx(81.0) and clean.diverged == 0
    assert partial.point == {"optimizer.lr": 3} and partial.diverged == 1 and partial.n == 1
    # 3 grid values: B=512's chosen lr=1 is the smallest, B=1024's lr=3 the largest of the cell's points
    assert (clean.edges, partial.edges) == ([("optimizer.lr", "smallest")], [("optimizer.lr", "largest")])
    assert "| LARS (no warm-up) | constant | 6 | 81.00 ± 1.41◂ | 70.00 (n=1/2)†▸ |" in table.markdown
    assert "◂ / ▸: the chosen point has the smallest / largest value of a continuous dimension among its cell's " \
           "trials (at least 3 distinct values), so the range was too narrow to show an optimum: LARS (no warm-up) " \
           "@ B=512: optimizer.lr smallest; LARS (no warm-up) @ B=1024: optimizer.lr largest." in table.markdown
    problems = "\n".join(table.problems)
    assert "1 duplicate run(s)" in problems and "1 run(s) at grid points or seeds not in the spec" in problems
    assert "run(s) with row label 'SGD'" in problems and "run(s) at column '4096'" in problems
    assert "the chosen point (lr=3) had 1 diverged seed(s)" in problems
    assert "99.00" not in table.markdown


def test_claim_section(spec, runs: Path) -> None:
    md = ACCURACY.build(spec, collect(runs)).markdown
    claim = md.split("## Paper's claim vs our numbers")[1]
    assert "TVLARS beats LARS without warm-up" in claim
    # Two tests in the family: 0.069 and 0.106 become 2 × 0.069 = 0.139 and max(0.139, 0.106) = 0.139 (Holm).
    assert "Multiple tests: this section's 2 test(s) (2 method-vs-baseline difference(s)) are one family" in claim
    assert "- B=512: TVLARS 89.50 ± 0.71 vs the best no-warm-up baseline LARS (no warm-up) 84.00 ± 1.41: " \
           "+5.50 points (95 % CI -1.42 to +12.42, p = 0.069, Holm p = 0.139: not significant)" in claim
    assert "vs the best baseline overall LARS + warm-up 87.50 ± 0.71: +2.00 points (95 % CI -1.04 to +5.04, " \
           "p = 0.106, Holm p = 0.139: not significant)" in claim
    assert "- B=1024: TVLARS 80.00 (n=1/2)‡ vs the best no-warm-up baseline: every such row diverged, failed or is " \
           "at chance level; vs the best baseline overall: no row has a number." in claim
    assert "TVLARS beats the best no-warm-up baseline significantly in 0 of 1 columns (columns where both have a " \
           "number above chance level, of 2); it is significantly worse in 0; in 1 column(s) every no-warm-up " \
           "baseline diverged, failed or stayed at chance level while TVLARS trained (not counted)." in claim
    assert "TVLARS beats the best baseline overall significantly in 0 of 1 columns" in claim
    assert "small-scale run" in claim


def test_claim_single_seed_and_no_compare(tmp_path: Path) -> None:
    text = SPEC.replace("seeds: [0, 1]", "seeds: [0]").replace("Fashion-MNIST mini table", "Full table")
    (tmp_path / "one.yaml").write_text(text)
    spec = load_spec(tmp_path / "one.yaml")
    root = tmp_path / "runs"
    write_run(root, "LARS (no warm-up)", 512, {"optimizer.lr": 1}, 0, 80.0, table="one")
    write_run(root, "TVLARS", 512, {"optimizer.lr": 1, "optimizer.lam": 1e-3}, 0, 79.0, table="one")
    md = ACCURACY.build(spec, collect(root)).markdown
    assert "-1.00 points (one seed: no estimate of seed noise; no test)" in md
    assert "TVLARS beats the best no-warm-up baseline significantly in 0 of 1 columns" in md
    assert "1 column(s) could not be tested" in md and "small-scale" not in md
    assert "Nothing is bold in this table: with one seed per cell there is no estimate of seed noise" in md
    assert "**" not in main_table(md)
    # Without `compare:` nothing is guessed from the labels.
    (tmp_path / "plain.yaml").write_text(text.replace("compare: {method: [TVLARS], no_warmup: [LARS (no warm-up)]}\n",
                                                      ""))
    md = ACCURACY.build(load_spec(tmp_path / "plain.yaml"), collect(root)).markdown
    assert "TVLARS beats LARS without warm-up" in md and "beats the best" not in md
    assert "The spec declares no `compare:` rows (method and baselines) and no `claims:`" in md


def test_columns_other_than_batch_size_without_grid(tmp_path: Path) -> None:
    (tmp_path / "lrs.yaml").write_text("title: LR ablation\ncolumns: {key: optimizer.lr, values: [5, 10]}\n"
                                       "seeds: [0]\nrows: [{label: TVLARS}, {label: LARS}]\n")
    spec = load_spec(tmp_path / "lrs.yaml")
    write_run(tmp_path / "runs", "TVLARS", 5, {}, 0, 70.0, table="lrs")
    table = ACCURACY.build(spec, collect(tmp_path / "runs"))
    # chosen on validation (no select_on: the default), reported on test: final_test_top1 = 70 - 1
    assert "| TVLARS | constant | 1 | 69.00 | – |" in table.markdown and "Selected point" not in table.markdown
    assert "LARS @ lr=10: 0 of 1 runs finished (1 grid point(s) × 1 seed(s)); 1 missing (seed 0)" in table.problems


def test_latex_and_csv(spec, runs: Path) -> None:
    table = ACCURACY.build(spec, collect(runs))
    tex = table.files["table.tex"]
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\begin{tabular}{lrcc}" in tex
    assert r"TVLARS & 4 & 89.50 $\pm$ 0.71" in tex and "LARS (no warm-up) & 4 & 84.00 $\\pm$ 1.41" in tex
    assert r"\textbf" not in tex.split(r"\midrule")[1]  # not significant (p = 0.11), so not bold
    assert " & div & " not in tex and tex.count(" & div") == 1 and " & -- \\\\" in tex
    assert tex_escape("a_b & 50% #1") == r"a\_b \& 50\% \#1"
    df = pd.read_csv(io.StringIO(table.files["table.csv"]))
    assert list(df.columns) == ["row", "column", "metric", "mean", "std", "n_seeds", "chosen_point", "status"]
    assert len(df) == 6
    row = df[(df["row"] == "TVLARS") & (df["column"] == 512)].iloc[0]
    assert row["mean"] == pytest.approx(89.5) and row["n_seeds"] == 2 and row["status"] == "ok"
    assert json.loads(row["chosen_point"]) == {"optimizer.lr": 1, "optimizer.lam": 0.001}
    assert set(df["status"]) == {"ok", "diverged", "missing"}


def test_format_point() -> None:
    assert format_point({"optimizer.lr": 0.3, "optimizer.lam": 1e-5}) == "lr=0.3, lam=1e-5"
    assert format_point({"optimizer.lr": 1.0, "schedule.lr": 2}) == "optimizer.lr=1, schedule.lr=2"


def test_figures(spec, runs: Path, tmp_path: Path) -> None:
    df = collect(runs)
    out = tmp_path / "out"
    paths = ACCURACY.draw(spec, ACCURACY.build(spec, df), df, out)
    assert sorted(p.name for p in paths) == ["accuracy_vs_epoch.png", "phi.png", "trust_ratio.png", "tuning_curve.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    # No metrics, no trust ratios, no φ: nothing is drawn, nothing crashes.
    empty = collect(tmp_path / "out")
    assert ACCURACY.draw(spec, ACCURACY.build(spec, empty), empty, tmp_path / "none") == []


def test_a_narrow_figure_keeps_its_title_legend_and_labels_inside(tmp_path: Path) -> None:
    """One panel, eight long row labels, a long title and y label: the legend takes fewer columns, title and label
    wrap, the figure grows by the legend's height (the panel keeps its height), and everything lies inside it."""
    from tvlars.tables.figures import panels, save

    fig, [ax] = panels(1)
    for i in range(8):
        ax.plot([0, 1], [i, i + 1], label=f"optimizer number {i} + warm-up, cosine to 0.001x")
    title = "a-table-with-a-long-name: tuning curve, best of the first k points (mean over 1 search seed)"
    height = fig.get_figheight()
    save(fig, [ax], "best so far: final-epoch validation top-1 (%) of the row", title, tmp_path / "f.png")
    renderer = fig.canvas.get_renderer()
    inside = fig.bbox.padded(1)
    [legend] = fig.legends
    assert legend._ncols < 4 and "\n" in fig.get_suptitle() and "\n" in ax.get_ylabel()
    for artist in (legend, fig._suptitle, ax.yaxis.label):
        box = artist.get_window_extent(renderer)
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    assert fig.get_figheight() > height + legend.get_window_extent(renderer).height / fig.dpi - 0.05
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_accuracy_curves_draw_validation_where_the_runs_have_it(tmp_path: Path) -> None:
    from tvlars.tables.kinds.accuracy import _accuracy_curve

    rows = [{"epoch": 1, "val_top1": 50.0}, {"epoch": 2, "val_top1": 60.0, "test_top1": 58.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    key, curve = _accuracy_curve(str(tmp_path))
    assert key == "val_top1" and curve.to_dict() == {1: 50.0, 2: 60.0}
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 3, "test_top1": 70.0}) + "\n")
    assert _accuracy_curve(str(tmp_path))[0] == "test_top1"


def test_phi_is_drawn_as_the_runs_recorded_it(spec, runs: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """φ comes from the records (``phi`` in trust.jsonl: here 1/step, TVLARS rows only), one curve per grid point,
    the cell's chosen point marked; nothing about the optimizer is recomputed."""
    drawn: dict[str, list[Any]] = {}

    def save(fig: Any, axes: list[Any], ylabel: str, title: str, path: Path, **_: Any) -> list[Path]:
        drawn[path.name] = axes
        return [path]

    monkeypatch.setattr(accuracy, "save", save)
    df = collect(runs)
    accuracy.phi_curves(spec, ACCURACY.build(spec, df), df, tmp_path)
    [ax] = drawn["phi.png"]
    assert [line.get_label() for line in ax.lines] == ["lr=1, lam=0.001 (selected)", "lr=1, lam=0.01"]
    for line in ax.lines:  # 10 steps per epoch
        assert line.get_xdata().tolist() == [0.5, 1.0, 1.5, 2.0]
        assert line.get_ydata().tolist() == pytest.approx([1 / 5, 1 / 10, 1 / 15, 1 / 20])


class FakeRun:
    def __init__(self, rid: str, state: str, config: dict[str, Any], summary: dict[str, Any]) -> None:
        self.id, self.state, self.config, self.summary = rid, state, config, summary


def test_wandb_source(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(label: str, point: dict, seed: int, state: str, best: float, epochs_done: int = 3) -> FakeRun:
        config = {"optimizer": {"_target_": "tvlars.optim.LARS"}, "epochs": 3, "seed": seed,
                  "labels": {"table": "mini", "row": label, "column": 512, "point": point}}
        summary = {"summary/best_test_top1": best, "summary/final_test_top1": best, "summary/seed": seed,
                   "summary/epochs_completed": epochs_done, "summary/steps_per_epoch": 10, "summary/num_classes": 10,
                   "_step": 30}
        return FakeRun(f"r{seed}{state}", state, config, summary)

    runs = [fake("LARS (no warm-up)", {"optimizer.lr": 1}, 0, "finished", 80.0),
            fake("LARS (no warm-up)", {"optimizer.lr": 1}, 1, "finished", 82.0),
            fake("LARS (no warm-up)", {"optimizer.lr": 2}, 0, "finished", 99.0, epochs_done=1),
            fake("LARS (no warm-up)", {"optimizer.lr": 2}, 1, "crashed", 50.0),
            fake("TVLARS", {"optimizer.lr": 1, "optimizer.lam": 1e-3}, 0, "running", 10.0)]
    calls = []

    class FakeApi:
        def runs(self, path: str) -> list[FakeRun]:
            calls.append(path)
            return runs

    monkeypatch.setattr(collect_module, "api_factory", FakeApi)
    df = collect("wandb:me/tvlars")
    assert calls == ["me/tvlars"]
    assert list(df["status"]) == ["completed", "completed", "diverged", "failed", "running"]
    assert df["run_dir"].iloc[0] == "wandb:me/tvlars/r0finished"
    cell = ACCURACY.build(spec, df).cells[("LARS (no warm-up)", 512)]
    assert cell.point == {"optimizer.lr": 1} and cell.mean == pytest.approx(81.0)

    class Broken:
        def runs(self, path: str) -> list[FakeRun]:
            raise ValueError("project not found")

    monkeypatch.setattr(collect_module, "api_factory", Broken)
    from tvlars.errors import UserError

    with pytest.raises(UserError, match="cannot read W&B project me/x"):
        collect("wandb:me/x")


def test_make_tables_cli(spec, runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = build.main
    out = tmp_path / "results"
    assert main(["--table", str(spec.path), "--source", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "run(s) of table mini (expected 24)" in printed and "2 unreadable summary.json" in printed
    assert "| TVLARS |" in printed
    names = {p.name for p in out.iterdir()}
    assert {"table.md", "table.tex", "table.csv", "accuracy_vs_epoch.png", "trust_ratio.png", "phi.png"} <= names

    assert main(["--table", "no-such-table", "--source", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no experiment spec")
    assert main(["--table", str(spec.path), "--source", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: run source")


def test_trust_families_and_short_series() -> None:
    from matplotlib.figure import Figure

    from tvlars.optim import LAMB, LARS
    from tvlars.tables.figures import draw_series
    from tvlars.tables.kinds.accuracy import _trust_family

    def family(target: str, **extra: Any) -> str | None:
        return _trust_family({"optimizer": {"_target_": target, **extra}})

    assert family("tvlars.optim.LARS") == family("tvlars.optim.tvlars.tvlars_from_epochs") == LARS.family
    assert family("tvlars.optim.LAMBC") == family("tvlars.optim.CDAT", base="lamb") == LAMB.family != LARS.family
    assert family("tvlars.optim.CDAT", base="lars") == LARS.family and family("tvlars.optim.CDAT", base="sgd") is None
    assert family("torch.optim.SGD") is None and family("no.such.Optimizer") is None and _trust_family({}) is None
    ax = Figure().subplots()
    draw_series(ax, np.array([5.0]), np.array([0.3]), np.array([0.2]), np.array([0.4]), "C0", "one point")
    line = ax.lines[0]  # then the error bar's caps
    assert line.get_marker() == "o" and line.get_linestyle() == "None"  # a marker with an error bar, not a line
    assert len(ax.containers) == 1
