"""RUN.md from synthetic records (tvlars.tables.run_md through tvlars.tables.build): the study, steps and data,
machine and software, run time, records, the instruments' summary checked by hand, the discussion; rebuilt byte for
byte from the copied records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.tables.test_accuracy import write_run
from tvlars.tables import build
from tvlars.tables.collect import collect
from tvlars.tables.run_md import render
from tvlars.tables.spec import load_spec

SPEC = """\
title: instruments at B = 512
columns: {key: batch_size, values: [512]}
seeds: [0, 1]
select_on: test
chance: 10.0
rows:
  - label: M
    overrides: [optimizer=lars]
    grid: {optimizer.lr: [1]}
  - label: B
    overrides: [optimizer=lars, schedule=warmup_cosine]
    grid: {optimizer.lr: [2]}
compare: {method: [M]}
notes: Synthetic records, 3 epochs of 10 steps.
discussion: |
  At B = 512 the sharpness of M is above that of B (*Instruments*).
"""
# (row, seed) -> wall time (s), λ_max per step, B_simple per step (None: no file). 3 epochs × 10 steps: T = 30, early
# = steps ≤ 10, late = steps > 20; step 15 is in neither.
RUNS: dict[tuple[str, int], tuple[float, dict[int, float] | None, dict[int, float] | None]] = {
    ("M", 0): (60.0, {5: 10, 10: 20, 15: 100, 20: 50, 25: 30, 30: 40}, {2: 100, 6: -50, 10: 300, 12: 1000}),
    ("M", 1): (120.0, {5: 20, 10: 40, 15: 60, 20: 10, 25: 50, 30: 70}, {2: 200, 6: 400, 10: 0, 14: 9}),
    ("B", 0): (30.0, {5: 1, 10: 3, 25: 5}, {2: 10}),
    ("B", 1): (30.0, {5: 2, 10: 4, 30: 8}, None),
}
PROVENANCE = {"device": "cpu", "device_name": "cpu", "world_size": 1, "data_path": "device", "git_dirty": False,
              "git_diff_hash": None, "versions": {"python": "3.11.7", "torch": "2.14.1", "torchvision": "0.29.1",
                                                  "tvlars": "0.1.0"}}


def _jsonl(path: Path, key: str, values: dict[int, float]) -> None:
    path.write_text("".join(json.dumps({"step": s, "epoch": 1 + s // 10, key: v}) + "\n" for s, v in values.items()))


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inst.yaml").write_text(SPEC)
    for (row, seed), (wall, sharpness, noise) in RUNS.items():
        code = {"code_hash": "abc", "git_commit": "0123456789abcdef"} if (row, seed) != ("B", 1) else \
            {"code_hash": "def", "git_commit": "fedcba9876543210"}
        run = write_run(tmp_path / "runs" / "inst", row, 512, {"optimizer.lr": 1 if row == "M" else 2}, seed,
                        80.0, table="inst", wall_time_s=wall, **PROVENANCE, **code)
        _jsonl(run / "sharpness.jsonl", "lambda_max", sharpness)
        if noise:
            _jsonl(run / "noise_scale.jsonl", "b_simple", noise)
    return tmp_path


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}\n\n", 1)[1].split("\n## ", 1)[0]


def test_run_md_is_generated_from_the_records_and_rebuilds_byte_for_byte(study: Path) -> None:
    assert build.main(["--table", "inst.yaml"]) == 0
    results = study / "results" / "inst"
    text = (results / "RUN.md").read_text()
    assert text.startswith("# How these results were produced: instruments at B = 512\n")
    assert str(study) not in text  # no absolute path
    assert "make reproduce-table TABLE=inst.yaml" in _section(text, "Commands")
    study_part = _section(text, "Study")
    assert ("2 rows × 1 column (batch_size ∈ {512}) × 1 grid point × search seeds 0, 1 = 2 runs per cell, 4 in all."
            in study_part) and "Runs of the table in the records: 4 (4 completed)." in study_part
    data = _section(text, "Optimizer steps and data")
    assert "| B=512 | 10 | 3 | 30 | 4 |" in data  # steps per epoch × epochs
    assert "Training set: between 5120 and 5631 images" in data  # 10 steps of 512, the last partial batch dropped
    assert "Data path (`data_path`): device (4 runs)." in data
    machine = _section(text, "Machine and software")
    assert "| cpu | cpu | 1 | 3.11.7 | 2.14.1 | 0.29.1 | 0.1.0 | 4 |" in machine
    assert "| abc | 0123456789ab | no | – | 3 |" in machine and "| def | fedcba987654 | no | – | 1 |" in machine
    time = _section(text, "Run time")
    assert "(Σ `wall_time_s` over the 4 runs that record it, of 4): 4.0 min (0.1 h)" in time
    assert "| M | 3.0 min |" in time and "| B | 1.0 min |" in time and "| all rows | 4.0 min |" in time
    records = _section(text, "Records")
    assert records.startswith("`runs/` holds 4 run directories, ")
    assert "`noise_scale.jsonl` (3), `sharpness.jsonl` (4), `summary.json` (4)" in records
    assert _section(text, "Discussion") == "At B = 512 the sharpness of M is above that of B (*Instruments*).\n"

    # A fresh clone: the committed records are the source; RUN.md comes out the same, and so into another directory.
    (study / "runs").rename(study / "elsewhere")
    assert build.main(["--table", "inst.yaml"]) == 0
    assert (results / "RUN.md").read_text() == text
    assert build.main(["--table", "inst.yaml", "--source", str(results / "runs"), "--out", "copy"]) == 0
    assert (study / "copy" / "RUN.md").read_bytes() == text.encode()


def test_instrument_summary_by_hand(study: Path) -> None:
    """M: λ early means (10+20)/2 = 15 and (20+40)/2 = 30 → 22.5 ± 10.6; peaks 100, 70 → 85.0 ± 21.2; late (30+40)/2
    = 35 and (50+70)/2 = 60 → 47.5 ± 17.7; B_simple early medians of (100, −50, 300) and (200, 400, 0): 100, 200 →
    150 ± 71. B: early 2, 3 → 2.5 ± 0.7; peaks 5, 8 → 6.5 ± 2.1; late 5, 8; B_simple from one run: 10.0 (n=1)."""
    spec = load_spec(study / "inst.yaml")
    text = render(spec, collect(study / "runs"), None, "wandb:x/y")
    section = _section(text, "Instruments")
    assert "| Method | column | runs | early / late steps | λ_max early | λ_max peak | λ_max late | B_simple early |" \
        in section
    assert "| M | B=512 | 2 | ≤ 10 / > 20 | 22.5 ± 10.6 | 85.0 ± 21.2 | 47.5 ± 17.7 | 150 ± 71 |" in section
    assert "| B | B=512 | 2 | ≤ 10 / > 20 | 2.5 ± 0.7 | 6.5 ± 2.1 | 6.5 ± 2.1 | 10.0 (n=1) |" in section
    assert "Holm-adjusted over these 3 test(s)" in section  # λ early, peak, late; B_simple has one run of B
    assert "- B=512, λ_max early: M − B: +20.0 (95 % CI " in section
    assert "- B=512, B_simple early: M − B: no test (one seed: no estimate of seed noise)." in section
    assert _section(text, "Records") == "Read from `wandb:x/y`; no record is copied here.\n"


def test_run_time_splits_into_training_steps_and_the_rest(study: Path) -> None:
    """Over the runs whose metrics.jsonl times its epochs: Σ epoch_time_s against Σ wall_time_s of those runs."""
    spec = load_spec(study / "inst.yaml")
    assert "Split over" not in _section(render(spec, collect(study / "runs"), None, "x"), "Run time")  # no times
    runs = collect(study / "runs").set_index(["row", "seed"])["run_dir"]
    for (row, seed), per_epoch in {("M", 0): 16.0, ("M", 1): 24.0}.items():  # 3 epochs of 60 s and 120 s wall
        metrics = Path(runs[(row, seed)]) / "metrics.jsonl"
        rows = [json.loads(line) | {"epoch_time_s": per_epoch} for line in metrics.read_text().splitlines()]
        metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    time = _section(render(spec, collect(study / "runs"), None, "x"), "Run time")
    assert ("Split over the 2 runs whose `metrics.jsonl` times their epochs (3.0 min): training steps "
            "(Σ `epoch_time_s`) 2.0 min (67 %), the rest of the epochs 1.0 min (33 %)") in time
    assert "time their measurements" not in time  # records from before measure_time_s
    metrics = Path(runs[("M", 1)]) / "metrics.jsonl"  # 3 epochs of 120 s wall, 6 s each in the sharpness
    rows = [json.loads(line) | {"measure_time_s": 6.0} for line in metrics.read_text().splitlines()]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    time = _section(render(spec, collect(study / "runs"), None, "x"), "Run time")
    assert ("The 1 runs that time their measurements spent 0.3 min on them (Σ `measure_time_s`), 15 % of their "
            "2.0 min.") in time


def test_runs_without_instruments_or_provenance(study: Path) -> None:
    """Older records (no provenance fields, no instrument files) say what is missing and state nothing else."""
    for path in (study / "runs" / "inst").rglob("*.jsonl"):
        if path.name != "metrics.jsonl":
            path.unlink()
    for path in (study / "runs" / "inst").rglob("summary.json"):
        summary: dict[str, Any] = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in summary.items() if k not in (*PROVENANCE, "code_hash")}))
    text = render(load_spec(study / "inst.yaml"), collect(study / "runs"), None, "wandb:x/y")
    assert "## Instruments" not in text and "Training set" not in text
    assert "| – | – | – | – | – | – | – | 4 |" in _section(text, "Machine and software")
    assert "Data path (`data_path`): – (4 runs)." in text


def test_an_empty_build_describes_the_design_only(study: Path) -> None:
    """``--allow-empty`` without a run of the table: the design and the records, no discussion of absent results."""
    text = render(load_spec(study / "inst.yaml"), collect(study / "runs").assign(table="other"), None, "wandb:x/y")
    assert "- Runs of the table in the records: 0 (none)." in text
    assert "## Discussion" not in text and "## Run time" not in text and text.endswith("no record is copied here.\n")
