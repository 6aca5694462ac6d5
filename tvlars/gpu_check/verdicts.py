"""What a step's outputs say: passed or not, a line of figures, and detail lines for the report."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

if TYPE_CHECKING:
    from tvlars.gpu_check.plan import Step


@dataclass
class Verdict:
    ok: bool
    figures: str
    details: list[str] = field(default_factory=list)


def summarize_tests(junit: Path, require_run: bool = True) -> Verdict:
    """Per test function: passed/failed/skipped counts and the first line of each failure (pytest's JUnit XML)."""
    if not junit.exists():
        return Verdict(False, "no JUnit report: pytest did not finish")
    counts: dict[str, Counter[str]] = {}
    failures: list[str] = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "?")
        test = name.split("[")[0]
        problem = next((case.find(tag) for tag in ("failure", "error") if case.find(tag) is not None), None)
        outcome = "failed" if problem is not None else "skipped" if case.find("skipped") is not None else "passed"
        counts.setdefault(test, Counter())[outcome] += 1
        if problem is not None:
            message = (problem.get("message") or problem.text or "").strip().splitlines() or [""]
            failures.append(f"FAILED {name}: {message[0][:200]}")
    total = sum(counts.values(), Counter())
    details = [f"{test}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items())) for test, c in counts.items()]
    ok = total["failed"] == 0 and (total["passed"] > 0 or not require_run)
    figures = f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped"
    return Verdict(ok, figures + ("" if ok or total["failed"] else " (nothing ran)"), details + failures)


def percent(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f} %"


def summarize_training(step: Step, log: Path) -> Verdict:
    """Epoch times (the first includes warm-up and compilation), the steady epoch (median of the later ones) against
    the target, images/s, achieved TFLOP/s (counted FLOPs x images/s) against the device's dense bf16 peak."""
    from tvlars.records import RunRecords, read_jsonl
    from tvlars.sizing import H100_EPOCH_TARGET_S, bf16_peak, flops_per_image

    assert step.run_dir is not None
    records = RunRecords(step.run_dir)
    summary, rows = records.read_summary(), read_jsonl(records.metrics)
    if summary is None or not rows:
        return Verdict(False, "no summary.json / metrics.jsonl written")
    steady_rows = rows[1:] or rows
    steady = statistics.median(r["epoch_time_s"] for r in steady_rows)
    images_per_s = statistics.median(r["train_images_per_s"] for r in steady_rows)
    target = H100_EPOCH_TARGET_S["classification"]
    tflops = flops_per_image(step.overrides) * images_per_s / 1e12
    peak = bf16_peak(summary.get("device_name") or "")
    of_peak = f" = {tflops * 1e12 / peak:.1%} of the {peak / 1e12:.0f} TFLOP/s bf16 peak" if peak else \
        " (no bf16 peak known for this device)"
    images = summary["steps_per_epoch"] * summary["config"]["batch_size"]
    epochs = ", ".join(f"{r['epoch_time_s']:.2f}" for r in rows)
    figures = (f"epochs {epochs} s; steady {steady:.2f} s per {images} images (target <= {target} s: "
               f"{'met' if steady <= target else 'NOT met'}); {images_per_s:,.0f} img/s; {tflops:.3g} TFLOP/s"
               f"{of_peak}; test top-1 {percent(summary.get('final_test_top1'))}")
    ok = summary.get("status") == "completed"
    return Verdict(ok, figures if ok else f"status {summary.get('status')}: {summary.get('error')}; {figures}")


def nccl_activity(log_text: str) -> tuple[list[int], Counter[str]]:
    """(ranks of every NCCL communicator initialised, count of each collective run) from an NCCL_DEBUG=INFO log
    with NCCL_DEBUG_SUBSYS=INIT,COLL."""
    communicators = [int(n) for n in re.findall(r"nranks (\d+)\b.*Init COMPLETE", log_text)]
    return communicators, Counter(re.findall(r"NCCL INFO (\w+): opCount", log_text))


def summarize_ddp(step: Step, log: Path, nccl: bool = True) -> Verdict:
    """The run completed under a one-process torchrun (the DDP code path; one rank: NCCL across ranks needs two
    GPUs); NCCL created a communicator and ran the collectives DDP needs; the sharpness it measured through
    SyncBatchNorm is finite where it measured any. Barlow Twins: its linear evaluation completed, and NCCL
    all-gathered at least twice per step (both views' embeddings)."""
    from tvlars.records import RunRecords, read_jsonl

    assert step.run_dir is not None
    records = RunRecords(step.run_dir)
    summary = records.read_summary()
    if summary is None:
        return Verdict(False, "no summary.json written")
    ok = summary.get("status") == "completed"
    parts = [f"status {summary.get('status')}", f"world size {summary.get('world_size')} (one rank)"]
    linear_eval = summary.get("linear_eval")
    if linear_eval is not None:
        ok &= linear_eval.get("status") == "completed"
        parts.append(f"linear eval {linear_eval.get('status')}, test top-1 {percent(summary.get('final_test_top1'))}")
    else:
        parts.append(f"test top-1 {percent(summary.get('final_test_top1'))}")
    if records.sharpness.exists():
        sharpness = [row["lambda_max"] for row in read_jsonl(records.sharpness)]
        ok &= bool(sharpness) and all(math.isfinite(v) for v in sharpness)
        parts.append(f"sharpness through SyncBatchNorm {', '.join(f'{v:.3g}' for v in sharpness) or 'NONE'}")
    if not nccl:
        return Verdict(ok, "; ".join([*parts, "gloo (CPU): NCCL not checked"]))
    communicators, collectives = nccl_activity(log.read_text(errors="replace"))
    ok &= bool(communicators)
    parts.append(f"NCCL communicators {communicators or 'NONE (the DDP path was not taken)'}")
    parts.append("collectives " + (", ".join(f"{k} x{n}" for k, n in sorted(collectives.items())) or "none logged"))
    if linear_eval is not None and collectives["AllGather"] < 2 * summary.get("steps", 0):
        parts.append("WARN: fewer than 2 AllGather per step: SSL embeddings were not gathered through NCCL")
    return Verdict(ok, "; ".join(parts))


def summarize_bench(step: Step, log: Path) -> Verdict:
    """The benchmark's markdown table, verbatim."""
    lines = log.read_text(errors="replace").splitlines()
    table = [line for line in lines if line.startswith("|")]
    title = next((line for line in lines if line and not line.startswith(("|", "$"))), "")
    return Verdict(bool(table), f"{max(len(table) - 2, 0)} optimizers timed (table in the details)",
                   [title, "", *table] if table else [])
