"""The report: the device and every version that matters, one line per step, then the details; and the records kept
beside it."""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from tvlars.gpu_check.plan import CHECKOUT, Step
from tvlars.gpu_check.runner import PASSING, Result


def environment(smoke: bool, wheels: list[str]) -> list[str]:
    """Report lines: the device and every version that matters."""
    import torch

    versions = f"torch {torch.__version__}, Python {platform.python_version()}"
    if wheels:
        versions += f"; installed from wheels: {', '.join(wheels)}"
    if smoke or not torch.cuda.is_available():
        return [f"device: CPU ({platform.processor() or platform.machine()}), --smoke", f"software: {versions}"]
    props = torch.cuda.get_device_properties(0)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=20)
        driver = smi.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        driver = "unknown (no nvidia-smi)"
    nccl = torch.cuda.nccl.version()
    return [f"device: {props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB, "
            f"{torch.cuda.device_count()} visible); the DDP steps run one rank: NCCL across ranks, SyncBatchNorm "
            "statistics across GPUs and multi-node runs need two GPUs or more, and are not checked here",
            f"driver {driver}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, NCCL "
            f"{'.'.join(map(str, nccl)) if isinstance(nccl, tuple) else nccl}",
            f"software: {versions}"]


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=CHECKOUT, capture_output=True, text=True,
                              timeout=10)
        return done.stdout.strip() or "unknown (no git)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"


def verdict(results: Sequence[Result]) -> str:
    """``PASS`` (with the slow steps named), or ``FAIL``."""
    if not all(r.status in PASSING for r in results):
        return "FAIL"
    slow = [r.step.name for r in results if r.status == "SLOW"]
    return f"PASS (slower than planned: {', '.join(slow)})" if slow else "PASS"


def render(results: Sequence[Result], header: Sequence[str], budget: float, elapsed: float, out: Path) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# tvlars GPU check: {verdict(results)}", "",
             f"- {when}, {elapsed:.0f} s of a {budget:.0f} s budget, commit {git_commit()}",
             *(f"- {line}" for line in header), "",
             "| step | result | s | planned s | figures |", "|---|---|---:|---:|---|",
             *(f"| {r.step.name} | {r.status} | {r.seconds:.0f} | {r.step.planned_s} | {r.verdict.figures} |"
               for r in results)]
    for r in results:
        if r.verdict.details:
            lines += ["", f"## {r.step.name}", "", *(d if d.startswith("|") or not d else f"- {d}"
                                                      for d in r.verdict.details)]
    lines += ["", f"Logs: {out}/<step>.log; run records: {out}/runs/"]
    return "\n".join(lines) + "\n"


def keep_records(work: Path, out: Path) -> None:
    """Copy the pytest report and the runs' small records (config, metrics, summaries) next to the logs; the
    checkpoints stay behind."""
    for path in [*work.glob("*.xml"), *(work / "runs").rglob("*")]:
        if path.suffix in (".xml", ".json", ".jsonl", ".yaml"):
            target = out / path.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def clear_outputs(out: Path, steps: Sequence[Step]) -> None:
    """Remove what an earlier check left in ``out`` (its report, step logs, JUnit report and run records)."""
    for path in (out / "report.md", out / "cuda-tests.xml", *(out / f"{s.name}.log" for s in steps)):
        path.unlink(missing_ok=True)
    shutil.rmtree(out / "runs", ignore_errors=True)
