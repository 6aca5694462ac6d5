"""Running the steps under one global deadline: each in its own process group, killed with it when it overruns
the time it may take; its result judged from its outputs."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tvlars.gpu_check.plan import CHECKOUT, Step
from tvlars.gpu_check.verdicts import Verdict

PASSING = ("PASS", "SLOW", "N/A")  # SLOW: passed, after more than its planned time
STOP_S = 10  # what stopping a step may take (SIGTERM, then SIGKILL after this): kept free after each step's limit


@dataclass
class Result:
    step: Step
    status: str  # PASS, SLOW, FAIL, TIMEOUT, SKIP, N/A
    seconds: float
    verdict: Verdict


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the step's process group (torchrun passes it on), SIGKILL to what is left after :data:`STOP_S`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_step(step: Step, limit_s: float, log: Path, env: dict[str, str]) -> tuple[int | None, float]:
    """Run the step's command in its own process group, output to ``log``; (exit code or None on timeout, s)."""
    with log.open("w") as out:
        out.write(f"$ {shlex.join(step.command)}\n")
        out.flush()
        start = time.monotonic()
        proc = subprocess.Popen(step.command, cwd=CHECKOUT, env={**env, **dict(step.env)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                stop(proc)
    return code, time.monotonic() - start


def last_lines(log: Path, count: int = 3) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-count:]


def available(step: Step) -> bool:
    """Whether the checkout has every file the step runs (else it is N/A)."""
    return all((CHECKOUT / p).exists() for p in step.needs)


def execute(step: Step, deadline: float, out: Path, env: dict[str, str], reserve_s: float = 0.0) -> Result:
    """Run one step within the global ``deadline`` (``time.monotonic()``), keeping ``reserve_s`` of it for the
    steps after (:func:`reserve`): the step may take what is left beyond that and the time to stop it, at least
    its own minimum, else it is skipped. Judged from its outputs: PASS, or SLOW when it passed after its planned
    time."""
    if not available(step):
        missing = [p for p in step.needs if not (CHECKOUT / p).exists()]
        return Result(step, "N/A", 0.0, Verdict(True, f"not available: {', '.join(missing)} missing"))
    left = deadline - time.monotonic()
    limit = left - reserve_s - STOP_S
    if limit < step.min_s:
        return Result(step, "SKIP", 0.0, Verdict(False, f"budget: {left:.0f} s left, {reserve_s:.0f} s of it kept for "
                                                        f"the later steps; this one needs {step.min_s} s"))
    log = out / f"{step.name}.log"
    code, seconds = run_step(step, limit, log, env)
    if code is None:
        return Result(step, "TIMEOUT", seconds, Verdict(False, f"killed after {limit:.0f} s", last_lines(log)))
    if code != 0:
        return Result(step, "FAIL", seconds, Verdict(False, f"exit code {code}", last_lines(log, 8)))
    try:
        verdict = step.summarize(step, log)
    except Exception as exc:  # noqa: BLE001 - a broken output must not stop the other steps
        verdict = Verdict(False, f"cannot read the step's outputs: {type(exc).__name__}: {exc}")
    if not verdict.ok:
        return Result(step, "FAIL", seconds, verdict)
    if seconds > step.planned_s:
        verdict.figures = f"correct but slow: {seconds:.0f} s, planned {step.planned_s} s; {verdict.figures}"
        return Result(step, "SLOW", seconds, verdict)
    return Result(step, "PASS", seconds, verdict)


def reserve(later: Sequence[Step]) -> float:
    """The time the ``later`` steps that can run must keep: each its minimum and the time to stop it."""
    return sum(step.min_s + STOP_S for step in later if available(step))


def run_all(steps: Sequence[Step], deadline: float, out: Path, env: dict[str, str],
            report: Callable[[Result], None]) -> list[Result]:
    """Every step in order under ``deadline``, each keeping the :func:`reserve` of the steps after it; ``report``
    sees each result as it comes."""
    results = []
    for i, step in enumerate(steps):
        results.append(execute(step, deadline, out, env, reserve(steps[i + 1:])))
        report(results[-1])
    return results
