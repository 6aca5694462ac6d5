"""Statistics of the tables: bold beyond seed noise only, chance-level cells out of claims, confirmation seeds,
failed and corrupt runs, and the reproduction's comparison with the committed table (tvlars.tables)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from tests.tables.test_accuracy import main_table, write_run
from tvlars.errors import UserError
from tvlars.tables.collect import collect
from tvlars.tables.compare import verdict
from tvlars.tables.kinds.accuracy import ACCURACY
from tvlars.tables.spec import load_spec
from tvlars.tables.statistics import Difference, adjust, holm, tost, welch

SPEC = """\
title: statistics
claim: TVLARS wins.
columns: {key: batch_size, values: [512, 1024]}
seeds: [0, 1, 2]
metric: best_test_top1
select_on: test
compare: {method: [TVLARS], no_warmup: [LARS]}
rows:
  - {label: LARS, overrides: [optimizer=lars]}
  - {label: SGD, overrides: [optimizer=sgd]}
  - {label: TVLARS, overrides: [optimizer=tvlars]}
"""


def spec_and_runs(tmp_path: Path, values: dict[tuple[str, int], list[float | None]], text: str = SPEC,
                  **kwargs: Any) -> tuple[Any, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "stats.yaml").write_text(text)
    spec = load_spec(tmp_path / "stats.yaml")
    root = tmp_path / "runs"
    for (row, column), accs in values.items():
        for seed, acc in enumerate(accs):
            if acc is not None:
                write_run(root, row, column, {}, seed, acc, table="stats", **kwargs)
    return spec, root


def test_welch_matches_scipy_and_refuses_without_noise() -> None:
    a, b = [91.49, 91.57], [91.39, 91.49]
    difference, _ = welch(a, b)
    expected = stats.ttest_ind(a, b, equal_var=False)
    assert difference.p == pytest.approx(expected.pvalue) and difference.holm == difference.p  # a family of one
    assert not difference.significant
    assert difference.low < 0 < difference.high and difference.diff == pytest.approx(0.09)
    assert welch([1.0], b) == (None, "one seed: no estimate of seed noise")
    assert welch([10.2, 10.2], [10.2, 10.2])[0] is None


def test_holm_on_a_hand_computed_family() -> None:
    # m = 4. Sorted: 0.005, 0.01, 0.03, 0.04, times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; the running maximum keeps
    # the order: 0.02, 0.03, 0.06, 0.06. In the order given:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.2]) == [0.2] and holm([]) == []
    family = [Difference(2.0, 0.5, 3.5, 0.03, 0.03), Difference(-1.0, -1.9, -0.1, 0.04, 0.04)]
    assert all(d.significant for d in family)  # alone, each would count
    adjust(family)
    assert [d.holm for d in family] == pytest.approx([0.06, 0.06]) and not any(d.significant for d in family)
    assert family[0].text() == "+2.00 points (95 % CI +0.50 to +3.50, p = 0.030, Holm p = 0.060: not significant)"


def test_tost_is_two_one_sided_welch_tests() -> None:
    """a − b = −0.1 with s = 0.2 in both cells of 3: se = sqrt(0.04/3 + 0.04/3) = 0.1633 on 4 degrees of freedom."""
    a, b = [10.0, 10.2, 10.4], [10.1, 10.3, 10.5]
    se = math.sqrt(0.04 / 3 * 2)
    below, above = stats.t.sf((-0.1 + 1.0) / se, 4), stats.t.cdf((-0.1 - 1.0) / se, 4)  # H0: ≤ −1, H0: ≥ +1
    within = tost(a, b, 1.0)
    assert within.p == pytest.approx(max(below, above)) and within.equivalent
    assert (within.low, within.high) == pytest.approx((-0.1 - stats.t.ppf(0.95, 4) * se,
                                                       -0.1 + stats.t.ppf(0.95, 4) * se))  # the 90 % interval
    assert within.text().endswith("): equivalent within ±1 points")
    narrow = tost(a, b, 0.3)  # the 90 % interval, -0.45 to +0.25, is not inside ±0.3
    assert narrow.low < -0.3 and narrow.p > 0.05 and not narrow.equivalent
    assert narrow.text().endswith("): not shown equivalent")


def test_bold_only_beyond_seed_noise(tmp_path: Path) -> None:
    spec, root = spec_and_runs(tmp_path, {
        # B=512: TVLARS clearly ahead of SGD (p < 0.001) -> bold
        ("TVLARS", 512): [90.0, 90.2, 90.1], ("SGD", 512): [85.0, 85.3, 85.1], ("LARS", 512): [80.0, 80.5, 80.2],
        # B=1024: the data-path case: 91.53 ± 0.05 vs 91.44 ± 0.07 is seed noise -> nothing bold
        ("TVLARS", 1024): [91.49, 91.57, 91.53], ("SGD", 1024): [91.39, 91.49, 91.44], ("LARS", 1024): [50, 51, 52],
    })
    table = ACCURACY.build(spec, collect(root))
    assert table.bold == {("TVLARS", 512)}
    assert "| TVLARS | constant | 3 | **90.10 ± 0.10** | 91.53 ± 0.04 |" in table.markdown
    assert "Welch's t-test over the seeds of the two cells (two-sided), Holm–Bonferroni-adjusted over this table's " \
           "2 such test(s) (one per column where a test can be made), adjusted p < 0.05" in table.markdown
    latex = table.files["table.tex"]
    assert r"\textbf{90.10 $\pm$ 0.10}" in latex and r"\textbf{91.53" not in latex


def test_single_seed_table_has_no_bold_and_says_why(tmp_path: Path) -> None:
    text = SPEC.replace("seeds: [0, 1, 2]", "seeds: [0]")
    spec, root = spec_and_runs(tmp_path, {("TVLARS", 512): [90.0], ("SGD", 512): [50.0], ("LARS", 512): [40.0]},
                               text)
    table = ACCURACY.build(spec, collect(root))
    assert table.bold == set() and "**" not in main_table(table.markdown)
    assert "Nothing is bold in this table: with one seed per cell there is no estimate of seed noise" in table.markdown
    assert "one seed: nothing is bold" in table.files["table.tex"]


def test_chance_level_cells_never_count_in_the_claim(tmp_path: Path) -> None:
    spec, root = spec_and_runs(tmp_path, {
        # B=512: TVLARS at chance (10 %, 10 classes): not compared even though it "beats" LARS.
        ("TVLARS", 512): [12.0, 13.0, 14.0], ("LARS", 512): [10.0, 10.0, 10.1], ("SGD", 512): [60.0, 61.0, 62.0],
        # B=1024: LARS at chance, TVLARS trains: not counted as a win over the no-warm-up baseline.
        ("TVLARS", 1024): [70.0, 71.0, 72.0], ("LARS", 1024): [10.2, 10.2, 10.2], ("SGD", 1024): [50.0, 51.0, 52.0],
    })
    md = ACCURACY.build(spec, collect(root)).markdown
    claim = md.split("## Paper's claim vs our numbers")[1]
    assert "- B=512: TVLARS 13.00 ± 1.00 (chance) is within 5 points of chance level (10.0 %); not compared." in claim
    assert "vs the best no-warm-up baseline: every such row diverged, failed or is at chance level" in claim
    assert "TVLARS beats the best no-warm-up baseline significantly in 0 of 0 columns" in claim
    assert "in 1 column(s) every no-warm-up baseline diverged, failed or stayed at chance level" in claim
    assert "vs the best baseline overall SGD 51.00 ± 1.00: +20.00 points (95 % CI" in claim
    assert "TVLARS beats the best baseline overall significantly in 1 of 1 columns" in claim
    assert "| LARS | constant | 3 | 10.03 ± 0.06 (chance) | 10.20 ± 0.00 (chance) |" in md


def test_chance_from_num_classes_else_the_spec_else_an_error(tmp_path: Path) -> None:
    values = {("TVLARS", 512): [3.0, 4.0, 5.0], ("SGD", 512): [30.0, 31.0, 32.0]}
    spec, root = spec_and_runs(tmp_path, values, num_classes=100)  # chance 1 %: 4 % is within 5 points
    assert ACCURACY.build(spec, collect(root)).cells[("TVLARS", 512)].at_chance
    spec, root = spec_and_runs(tmp_path / "b", values, SPEC + "chance: 0.5\n", num_classes=None)
    assert ACCURACY.build(spec, collect(root)).cells[("TVLARS", 512)].chance == 0.5
    spec, root = spec_and_runs(tmp_path / "c", values, num_classes=None)
    with pytest.raises(UserError, match=r"chance level of SGD @ B=512 is unknown .* add `chance: <accuracy in %>`"):
        ACCURACY.build(spec, collect(root))


def test_confirmation_seeds_are_reported_not_the_search_seeds(tmp_path: Path) -> None:
    text = SPEC.replace("seeds: [0, 1, 2]", "seeds: [0]\nconfirm_seeds: [0, 1, 2]\nreuse_search_seeds: true").replace(
        "{label: SGD, overrides: [optimizer=sgd]}", "{label: SGD, overrides: [optimizer=sgd], "
        "search: {trials: 2, space: {optimizer.lr: {log: [0.01, 1]}}}}").replace(
        "[optimizer=lars]}", "[optimizer=lars], grid: {optimizer.lr: [1, 2]}}").replace(
        "[optimizer=tvlars]}", "[optimizer=tvlars], grid: {optimizer.lr: [1, 2]}}")
    (tmp_path / "stats.yaml").write_text(text)
    spec = load_spec(tmp_path / "stats.yaml")
    root = tmp_path / "runs"
    sgd = spec.rows[1]
    first, second = sgd.points(512)
    write_run(root, "SGD", 512, first, 0, 70.0, table="stats")
    write_run(root, "SGD", 512, second, 0, 80.0, table="stats")  # the search picks the second trial
    for seed, acc in ((1, 75.0), (2, 77.0)):
        write_run(root, "SGD", 512, second, seed, acc, table="stats")
        write_run(root, "SGD", 512, first, seed, 99.0, table="stats")  # leftovers at the other point: not used
    table = ACCURACY.build(spec, collect(root))
    cell = table.cells[("SGD", 512)]
    assert cell.point == second and cell.values == [80.0, 75.0, 77.0] and cell.n == 3
    assert cell.trials == [70.0, 80.0] and cell.search_done
    assert "mean ± std over 3 seed(s) (confirmation runs of the chosen point)" in table.markdown
    assert "re-run with seeds 0, 1, 2" in table.markdown and "99" not in table.markdown.split("## Problems")[0]
    assert "The confirmation includes the search seed 0 (`reuse_search_seeds: true`): those runs both chose the " \
           "point and are reported." in table.markdown
    # a cell whose confirmation has not run yet says so
    write_run(root, "TVLARS", 512, {"optimizer.lr": 1}, 0, 60.0, table="stats")
    write_run(root, "TVLARS", 512, {"optimizer.lr": 2}, 0, 50.0, table="stats")
    problems = "\n".join(ACCURACY.build(spec, collect(root)).problems)
    assert "TVLARS @ B=512: confirmation of the chosen point (lr=1): 1 of 3 seeds usable (seeds 1, 2 not)" in problems


def test_failed_runs_are_marked_and_listed_with_their_error(tmp_path: Path) -> None:
    spec, root = spec_and_runs(tmp_path, {("TVLARS", 512): [90.0, 91.0], ("SGD", 512): [80.0, 81.0, 82.0]})
    write_run(root, "TVLARS", 512, {}, 2, None, status="failed", table="stats",
              error="RuntimeError: CUDA out of memory\nTraceback (most recent call last): ...")
    for seed in range(3):
        write_run(root, "LARS", 1024, {}, seed, None, status="failed", table="stats", error="ValueError: bad lr")
    table = ACCURACY.build(spec, collect(root))
    assert "| TVLARS | constant | 3 | **90.50 ± 0.71** (n=2/3)‡ |" in table.markdown
    assert "| LARS | – | 3 | – | failed‡ |" in table.markdown  # no reported run: no schedule to read
    problems = "\n".join(table.problems)
    assert "TVLARS @ B=512: seed 2 failed: RuntimeError: CUDA out of memory" in problems and "Traceback" not in problems
    assert problems.count("LARS @ B=1024: seed") == 3 and "failed: ValueError: bad lr" in problems
    assert table.cells[("LARS", 1024)].status == "failed" and ",failed\n" in table.files["table.csv"]


@pytest.mark.parametrize("body", [b'{"status": "completed", "best_test_top1": "abc", "config": {}}',
                                  b'{"status": "completed", "config": 3}',
                                  b'{"status": "completed", "config": {"labels": []}}',
                                  b'{"status": ["completed"]}', b"\x89PNG\r\n\x1a\n\x00\xff binary"])
def test_summaries_of_the_wrong_type_are_problems_not_crashes(body: bytes, tmp_path: Path) -> None:
    spec, root = spec_and_runs(tmp_path, {("SGD", 512): [80.0, 81.0, 82.0]})
    (root / "broken").mkdir()
    (root / "broken" / "summary.json").write_bytes(body)
    df = collect(root)
    assert (df["status"] == "corrupt").sum() == 1
    table = ACCURACY.build(spec, df)
    assert any(p.startswith("unreadable summary.json (") and p.endswith("): broken/summary.json")
               for p in table.problems)


def test_comparison_with_the_committed_table(tmp_path: Path) -> None:
    spec, root = spec_and_runs(tmp_path, {("TVLARS", 512): [90.0, 90.2, 90.1], ("SGD", 512): [85.0, 85.3, 85.1],
                                          ("LARS", 512): [80.0, 80.5, 80.2], ("TVLARS", 1024): [70.0, 71.0, 72.0]})
    table = ACCURACY.build(spec, collect(root))
    committed = table.files["table.csv"] \
        .replace("TVLARS,512,best_test_top1,90.1000", "TVLARS,512,best_test_top1,90.0500") \
        .replace("SGD,512,best_test_top1,85.1333", "SGD,512,best_test_top1,95.1333") \
        .replace("LARS,1024,best_test_top1,,,0,,missing", "LARS,1024,best_test_top1,50.0000,1.0000,3,{},ok")
    report = ACCURACY.compare(committed, table)
    assert "| TVLARS | ≈ | = |" in report and "| SGD | ≠ | = |" in report and "| LARS | = | ≠ |" in report
    assert "2 same value" not in report and "3 same value, 1 within seed noise, 2 different" in report
    assert "- SGD @ B=512: different (95.13 → 85.13, Welch p = " in report
    assert "- LARS @ B=1024: different (ok → missing)" in report
    row = {"mean": "80.0000", "std": "", "n_seeds": "1", "status": "ok"}
    assert verdict(row, "ok", 81.0, math.nan, 1) == ("untestable", "80.00 → 81.00; one seed each or no spread")
    # one seed against three: a new draw from N(81, 1)? t = -1 / sqrt(1 + 1/3) = -0.866 (2 df): p = 0.478
    key, reason = verdict(row, "ok", 81.0, 1.0, 3)
    assert key == "noise" and reason == "80.00 → 81.00; one seed against 3: prediction p = 0.478"
    assert verdict(row, "ok", 90.0, 1.0, 3)[0] == "different"  # t = -8.7 (2 df): p = 0.013
    three = {"mean": "80.0000", "std": "1.0000", "n_seeds": "3", "status": "ok"}
    assert verdict(three, "ok", 90.0, math.nan, 1)[0] == "different"  # the same test, sides swapped
    assert verdict(three, "ok", 81.0, math.nan, 1)[1].endswith("one seed against 3: prediction p = 0.478")
    assert verdict(None, "ok", 81.0, 1.0, 3)[0] == "new"
    written = {"mean": "90.3550", "std": "0.6024", "n_seeds": "4", "status": "ok"}  # the same records, rebuilt
    assert verdict(written, "ok", 90.35499999999999, 0.6024, 4) == ("same", "")  # not "90.36 → 90.35"
    assert json.loads(json.dumps(report))  # plain text, no absolute paths
    assert str(tmp_path) not in report


CLAIMS = SPEC + """\
claims:
  - {a: TVLARS, b: LARS, question: "does TVLARS match LARS?", margin: 1.0}
  - {a: TVLARS, b: SGD, question: "does TVLARS beat SGD?"}
  - {a: SGD, b: LARS, question: "are SGD and LARS the same?", margin: 0.5}
"""


def test_named_claims_with_equivalence_share_one_holm_family(tmp_path: Path) -> None:
    spec, root = spec_and_runs(tmp_path, {
        # B=512: TVLARS and LARS equal to ±1 point, both 5 points above SGD
        ("TVLARS", 512): [90.0, 90.2, 90.1], ("LARS", 512): [90.1, 90.0, 90.2], ("SGD", 512): [85.0, 85.3, 85.1],
        # B=1024: TVLARS and LARS too noisy to tell apart or to call equal; SGD at chance level
        ("TVLARS", 1024): [70.0, 75.0, 80.0], ("LARS", 1024): [71.0, 76.0, 70.0], ("SGD", 1024): [12.0, 13.0, 14.0],
    }, CLAIMS)
    md = ACCURACY.build(spec, collect(root)).markdown
    claim = md.split("## Paper's claim vs our numbers")[1].split("## Problems")[0]
    # TVLARS vs LARS, the best no-warm-up and the best baseline overall, is one test per column (2); the claims add
    # TVLARS vs SGD and SGD vs LARS at B=512 (SGD's B=1024 is at chance; TVLARS vs LARS repeats a test) and 3
    # equivalence tests: 7 tests, printed 11 times
    assert "this section's 7 test(s) (2 method-vs-baseline difference(s), 2 further named-claim difference(s), 3 " \
           "equivalence test(s)) are one family (two cells compared twice are one test)" in claim
    pairs = re.findall(r"p [=<] ([0-9.]+), Holm p [=<] ([0-9.]+)", claim)
    assert len(pairs) == 11 and all(float(q) >= float(p) for p, q in pairs)  # every test printed, adjusted upwards
    assert claim.count("+2.67 points (95 % CI -7.55 to +12.88, p = 0.487, Holm p = 1.000") == 3  # one test, B=1024
    named = claim.split("### Named claims")[1]
    first, second, third = named.split("**")[1::2]
    assert first == "TVLARS vs LARS: does TVLARS match LARS?" and second == "TVLARS vs SGD: does TVLARS beat SGD?"
    lines = [line for line in named.splitlines() if line.startswith("- ")]
    assert lines[0].startswith("- B=512: TVLARS 90.10 ± 0.10 − LARS 90.10 ± 0.10: +0.00 points (95 % CI")
    assert lines[0].endswith(": not significant); equivalence within ±1 points (TOST, 90 % CI -0.17 to +0.17, "
                             "p < 0.001, Holm p < 0.001): equivalent within ±1 points.")
    # seed noise is neither a difference nor an equivalence: two distinct verdicts
    assert ": not significant); equivalence within ±1 points" in lines[1] and lines[1].endswith(
        "): not shown equivalent.")
    assert lines[2].startswith("- B=512: TVLARS 90.10 ± 0.10 − SGD 85.13 ± 0.15: +4.97 points") and \
        lines[2].endswith(": significant).")
    assert lines[3] == "- B=1024: SGD 13.00 ± 1.00 (chance) is within 5 points of chance level (10.0 %); not compared."
    assert third == "SGD vs LARS: are SGD and LARS the same?" and lines[4].endswith("): not shown equivalent.")
    assert "**SGD vs LARS: are SGD and LARS the same?** (equivalence margin ±0.5 points)" in named
