"""`make gpu-check`: prove that a GPU node runs tvlars, in at most 8 minutes on one GPU.

    python scripts/gpu_check.py [--budget 450] [--out DIR] [--only STEP,...] [--wheels DIR]
    python scripts/gpu_check.py --dry-run        the steps, their time limits and commands (any machine)
    python scripts/gpu_check.py --validate       compose and validate every config the check trains (any machine)
    python scripts/gpu_check.py --smoke          every step at toy sizes on the CPU, to test the check itself
    python scripts/gpu_check.py --fetch-wheels   (where pip reaches PyPI) the pure-Python wheels into .gpu/wheels

Each step runs the project's own entry points (pytest, ``python -m tvlars.train``, ``torchrun``, the benchmark
scripts) as a subprocess under its own timeout, and every step under one global deadline (``--budget``): a step
that no longer fits is skipped, a step that hangs is killed with its process group. Logs go to ``--out`` (``$OUT``
if set, else ``gpu-check/``), ending in ``report.md`` (also printed): device, driver/CUDA/cuDNN/NCCL/torch versions,
one line per step (PASS, FAIL, TIMEOUT, SKIP or N/A, seconds, key figures), then the details.

Exit code 0 when every step passed, 1 when one did not, 2 when the check cannot start (no CUDA device, a missing
package): one ``error:`` line. On a node where only torch is installed, missing pure-Python packages are installed
offline from ``.gpu/wheels`` (``make gpu-wheels``) into a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # tvlars and bench_data without an install


from tvlars.errors import UserError  # noqa: E402 - after the path set-up

DEFAULT_BUDGET_S = 450  # 7.5 minutes: the check with its start-up and report stays under 8
DEFAULT_WHEELS = ROOT / ".gpu" / "wheels"
# Modules the check needs besides torch, and the distributions that provide them.
REQUIRED = {"hydra": "hydra-core", "omegaconf": "omegaconf", "antlr4": "antlr4-python3-runtime", "lightly": "lightly",
            "yaml": "PyYAML", "gpytorch": "gpytorch", "pytest": "pytest"}
# The pure-Python ones a torch-only GPU image lacks: `--fetch-wheels` downloads them (antlr4 4.9.3, omegaconf's pin,
# is an sdist on PyPI, so its wheel is built).
WHEELS = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "lightly")
BUILT_WHEELS = ("antlr4-python3-runtime",)

# CIFAR-shaped synthetic images (3x32x32, CIFAR's crop + flip) through a full-width ResNet-18 in bf16, channels-last,
# on the device path; TRAIN: a CIFAR-10-sized epoch (50 000 images), the setting of the 1.5 s epoch target.
CIFAR_SHAPED = ("dataset=synthetic", "dataset.channels=3", "dataset.image_size=32", "dataset.augment.crop_padding=4",
                "dataset.augment.hflip=true", "model=resnet18", "model.width=1.0", "batch_size=512", "precision=bf16",
                "channels_last=true", "data.on_device=true", "device=cuda", "logger=none", "progress=lines",
                "checkpoint_every=0")
TRAIN = (*CIFAR_SHAPED, "dataset.num_train=50000", "dataset.num_test=10000", "optimizer=sgd", "optimizer.lr=0.1",
         "epochs=3", "eval_every=3")
DDP_CLASSIFICATION = (*CIFAR_SHAPED, "dataset.num_train=8192", "dataset.num_test=2048", "optimizer=lars", "epochs=2")
DDP_BARLOW_TWINS = (*CIFAR_SHAPED, "dataset.num_train=4096", "dataset.num_test=1024", "task=barlow_twins",
                    "optimizer=lars", "epochs=1", "task.linear_eval.epochs=2")
# --smoke: appended to every training config (later overrides win): toy sizes on the CPU.
SMOKE = ("device=cpu", "dataset.num_train=256", "dataset.num_test=128", "dataset.image_size=16", "model.width=0.0625",
         "batch_size=64", "eval_batch_size=128", "epochs=2")
SMOKE_SSL = ("task.projector_dims=[64,64]", "task.linear_eval.epochs=1")
# NCCL logs every communicator it creates (INIT) and every collective it runs (COLL): proof of the DDP path.
NCCL_ENV = {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,COLL"}


@dataclass
class Verdict:
    """What a step's outputs say: passed or not, a line of figures, and detail lines for the report."""

    ok: bool
    figures: str
    details: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    name: str
    purpose: str
    timeout_s: int  # the step's own limit
    min_s: int  # not started with less than this left of the budget
    command: tuple[str, ...]
    summarize: Callable[[Step, Path], Verdict]  # (step, its log file) -> verdict, after a zero exit code
    overrides: tuple[str, ...] = ()  # the training config (validated by --validate)
    run_dir: Path | None = None
    env: tuple[tuple[str, str], ...] = ()
    needs: tuple[str, ...] = ()  # files of the checkout the step runs; missing -> N/A


@dataclass
class Result:
    step: Step
    status: str  # PASS, FAIL, TIMEOUT, SKIP, N/A
    seconds: float
    verdict: Verdict


# ------------------------------------------------------------------------------------------------ the steps
def cuda_test_files() -> list[str]:
    """Test files that use the ``cuda`` marker (the CUDA-only tests)."""
    return [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").rglob("test_*.py"))
            if "pytest.mark.cuda" in p.read_text()]


def plan(work: Path, smoke: bool = False) -> list[Step]:
    """The steps in order of priority (a step that no longer fits the budget is skipped); their outputs go to
    ``work``, a fresh directory."""
    py = sys.executable
    size = SMOKE if smoke else ()

    def train(name: str, base: tuple[str, ...], *extra: str) -> tuple[tuple[str, ...], Path]:
        return (*base, *extra, *size), work / "runs" / name

    pytest_timeout = ("--timeout=120",) if importlib.util.find_spec("pytest_timeout") else ()
    tests = cuda_test_files()
    steps = [Step("cuda-tests", "CUDA-only tests: no host sync in optimizer steps and whole training steps of every "
                  "task x optimizer family, resume on CUDA per family, batched transforms",
                  180, 60, (py, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                            f"--junitxml={work / 'cuda-tests.xml'}", *pytest_timeout, *tests),
                  lambda step, log: summarize_tests(work / "cuda-tests.xml", require_run=not smoke),
                  needs=tuple(tests) or ("tests/test_cuda.py",))]
    for name, compiled, timeout_s, min_s in (("train-eager", "false", 120, 45), ("train-compile", "true", 240, 120)):
        overrides, run_dir = train(name, TRAIN, f"compile={compiled}")
        steps.append(Step(name, f"ResNet-18 (full width) on 50 000 CIFAR-shaped images, bf16, channels-last, device "
                          f"path, compile={compiled}: steady epoch time vs the 1.5 s target, TFLOP/s vs bf16 peak",
                          timeout_s, min_s, (py, "-m", "tvlars.train", *overrides, f"run_dir={run_dir}"),
                          summarize_training, overrides, run_dir))
    torchrun = (py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "tvlars.train")
    for name, base, extra, timeout_s, min_s, purpose in (
            ("ddp-classification", DDP_CLASSIFICATION, (), 90, 30, "classification, LARS"),
            ("ddp-barlow-twins", DDP_BARLOW_TWINS, SMOKE_SSL if smoke else (), 120, 40,
             "Barlow Twins pre-training (LARS) + linear evaluation")):
        overrides, run_dir = train(name, base, *extra)
        steps.append(Step(name, f"1-process torchrun ({'gloo' if smoke else 'NCCL'}), the DDP code path: {purpose}",
                          timeout_s, min_s, (*torchrun, *overrides, f"run_dir={run_dir}"),
                          lambda step, log: summarize_ddp(step, log, nccl=not smoke), overrides, run_dir,
                          env=tuple(NCCL_ENV.items())))
    device, reps = ("cpu", ("--reps", "3", "--warmup", "1")) if smoke else ("cuda", ())
    steps.append(Step("bench-optim", "optimizer step cost on ResNet-18's parameters: eager vs fused vs torch",
                      150, 45, (py, "scripts/bench_optim.py", "--device", device, *reps), summarize_bench,
                      needs=("scripts/bench_optim.py",)))
    return steps


# ------------------------------------------------------------------------------------------------ verdicts
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


def flops_per_image(overrides: Sequence[str]) -> float:
    """Forward + backward FLOPs of the config's model for one image (``torch.utils.flop_counter`` on the meta
    device: shapes only, nothing is computed). Synthetic data: the shapes are ``dataset.channels/image_size``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tvlars.config import compose, instantiate_node

    cfg = compose(list(overrides))
    data = cfg.dataset
    model = instantiate_node(cfg.model, "model", num_classes=data.num_classes, in_channels=data.channels,
                             image_size=data.image_size).to("meta")
    images = torch.empty(2, data.channels, data.image_size, data.image_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(images).sum().backward()
    return counter.get_total_flops() / 2


def percent(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f} %"


def summarize_training(step: Step, log: Path) -> Verdict:
    """Epoch times (the first includes warm-up and compilation), the steady epoch (median of the later ones) against
    the target, images/s, achieved TFLOP/s (counted FLOPs x images/s) against the device's dense bf16 peak."""
    import bench_data

    from tvlars.records import RunRecords, read_jsonl

    assert step.run_dir is not None
    records = RunRecords(step.run_dir)
    summary, rows = records.read_summary(), read_jsonl(records.metrics)
    if summary is None or not rows:
        return Verdict(False, "no summary.json / metrics.jsonl written")
    steady_rows = rows[1:] or rows
    steady = statistics.median(r["epoch_time_s"] for r in steady_rows)
    images_per_s = statistics.median(r["train_images_per_s"] for r in steady_rows)
    target = bench_data.H100_EPOCH_TARGET_S["classification"]
    tflops = flops_per_image(step.overrides) * images_per_s / 1e12
    peak = bench_data.bf16_peak(summary.get("device_name") or "")
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
    """The run completed under torchrun; NCCL created a communicator and ran the collectives DDP needs. Barlow
    Twins: its linear evaluation completed, and NCCL all-gathered at least twice per step (both views' embeddings)."""
    from tvlars.records import RunRecords

    assert step.run_dir is not None
    summary = RunRecords(step.run_dir).read_summary()
    if summary is None:
        return Verdict(False, "no summary.json written")
    ok = summary.get("status") == "completed"
    parts = [f"status {summary.get('status')}", f"world size {summary.get('world_size')}"]
    linear_eval = summary.get("linear_eval")
    if linear_eval is not None:
        ok &= linear_eval.get("status") == "completed"
        parts.append(f"linear eval {linear_eval.get('status')}, test top-1 {percent(summary.get('final_test_top1'))}")
    else:
        parts.append(f"test top-1 {percent(summary.get('final_test_top1'))}")
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


# ------------------------------------------------------------------------------------------------ running
def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the step's process group (torchrun passes it on), SIGKILL to what is left after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_step(step: Step, limit_s: float, log: Path, env: dict[str, str]) -> tuple[int | None, float]:
    """Run the step's command in its own process group, output to ``log``; (exit code or None on timeout, s)."""
    with log.open("w") as out:
        out.write(f"$ {shlex.join(step.command)}\n")
        out.flush()
        start = time.monotonic()
        proc = subprocess.Popen(step.command, cwd=ROOT, env={**env, **dict(step.env)}, stdout=out,
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


def execute(step: Step, deadline: float, out: Path, env: dict[str, str]) -> Result:
    """Run one step within the global ``deadline`` (``time.monotonic()``) and judge it."""
    missing = [p for p in step.needs if not (ROOT / p).exists()]
    if missing:
        return Result(step, "N/A", 0.0, Verdict(True, f"not available: {', '.join(missing)} missing"))
    left = deadline - time.monotonic()
    if left < step.min_s:
        return Result(step, "SKIP", 0.0, Verdict(False, f"budget: {left:.0f} s left, the step needs {step.min_s} s"))
    limit = min(step.timeout_s, left)
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
    return Result(step, "PASS" if verdict.ok else "FAIL", seconds, verdict)


# ------------------------------------------------------------------------------------------------ set-up
def missing_modules() -> list[str]:
    importlib.invalidate_caches()
    return [module for module in REQUIRED if importlib.util.find_spec(module) is None]


def install_wheels(wheels: Path, target: Path) -> list[str]:
    """``pip install --no-index --no-deps --target TARGET WHEELS/*.whl`` (offline); the files installed."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        return []
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                           "--disable-pip-version-check", "--target", str(target), *map(str, files)],
                          capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise UserError(f"cannot install the wheels in {wheels} ({reason}); rebuild them with `make gpu-wheels`")
    return [f.name for f in files]


def ensure_modules(wheels: Path, site: Path) -> list[str]:
    """Make every :data:`REQUIRED` module importable here and in the steps, installing ``wheels`` into ``site``
    if one is missing; the wheels installed."""
    if not missing_modules():
        return []
    installed = install_wheels(wheels, site)
    sys.path.insert(0, str(site))
    missing = [REQUIRED[m] for m in missing_modules()]
    if missing:
        fetchable = [name for name in missing if name in WHEELS]
        other = [name for name in missing if name not in WHEELS]
        fixes = ([f"{', '.join(fetchable)}: not in {wheels}; run `make gpu-wheels` where pip reaches PyPI and bring "
                  ".gpu/wheels to this checkout (or pass --wheels DIR)"] if fetchable else []) + \
                ([f"{', '.join(other)}: install into this Python environment"] if other else [])
        raise UserError(f"missing Python packages: {'; '.join(fixes)}")
    return installed


def step_env(site: Path, out: Path) -> dict[str, str]:
    path = [str(site), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled",
            "TVLARS_DATA": str(out / "data")}


def fetch_wheels(directory: Path, python_version: str) -> None:
    """Download (or build) the :data:`WHEELS` at the versions installed here into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    except importlib.metadata.PackageNotFoundError as exc:
        raise UserError(f"{exc.name} is not installed in this Python; run `make install` first") from None
    pip = (sys.executable, "-m", "pip")
    downloaded = [p for p in pins if p.split("==")[0] not in BUILT_WHEELS]
    built = [p for p in pins if p.split("==")[0] in BUILT_WHEELS]
    for command in ((*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
                     "-d", str(directory), *downloaded),
                    (*pip, "wheel", "--no-deps", "-w", str(directory), *built)):
        print(f"$ {shlex.join(command)}", flush=True)
        if subprocess.run(command).returncode:
            raise UserError(f"`{shlex.join(command[2:4])}` failed (see above); is PyPI reachable?")
    files = sorted(directory.glob("*.whl"))
    impure = [f.name for f in files if not f.name.endswith("-none-any.whl")]
    if impure:
        raise UserError(f"{', '.join(impure)} in {directory} are not pure-Python wheels; remove them")
    size = sum(f.stat().st_size for f in files)
    print(f"{len(files)} wheels, {size / 1e6:.1f} MB in {directory}: {', '.join(f.name for f in files)}")


def validate_configs(steps: Sequence[Step]) -> list[str]:
    """Compose every training config of ``steps`` with Hydra and check it with :func:`tvlars.config.validate`."""
    from tvlars.config import compose, validate

    names = []
    for step in steps:
        if step.overrides:
            try:
                validate(compose(list(step.overrides)))
            except UserError as exc:
                raise UserError(f"step {step.name}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - Hydra's composition errors name the override
                raise UserError(f"step {step.name}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
            names.append(step.name)
    return names


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
            f"{torch.cuda.device_count()} visible)",
            f"driver {driver}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, NCCL "
            f"{'.'.join(map(str, nccl)) if isinstance(nccl, tuple) else nccl}",
            f"software: {versions}"]


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
        return done.stdout.strip() or "unknown (no git)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"


def render(results: Sequence[Result], header: Sequence[str], budget: float, elapsed: float, out: Path) -> str:
    passed = all(r.status in ("PASS", "N/A") for r in results)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# tvlars GPU check: {'PASS' if passed else 'FAIL'}", "",
             f"- {when}, {elapsed:.0f} s of a {budget:.0f} s budget, commit {git_commit()}",
             *(f"- {line}" for line in header), "",
             "| step | result | s | figures |", "|---|---|---:|---|",
             *(f"| {r.step.name} | {r.status} | {r.seconds:.0f} | {r.verdict.figures} |" for r in results)]
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


def run_check(args: argparse.Namespace, started: float) -> int:
    if importlib.util.find_spec("torch") is None:
        raise UserError(f"torch is not installed in {sys.executable}; run the check with the Python that has it "
                        "(make gpu-check GPU_PY=/path/to/python)")
    import torch

    if not args.smoke and not torch.cuda.is_available():
        raise UserError(f"torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda or 'none'}); "
                        "run `make gpu-check` on a GPU node (`--smoke` tests the check itself on the CPU)")
    out: Path = args.out
    work = Path(tempfile.mkdtemp(prefix="tvlars-gpu-check-"))
    try:
        steps = select(plan(work, args.smoke), args.only)
        try:
            out.mkdir(parents=True, exist_ok=True)
            clear_outputs(out, steps)
            (out / "report.md").write_text("running\n")
        except OSError as exc:
            raise UserError(f"output directory {out} is not writable ({exc.strerror}); pass --out DIR") from None
        wheels = ensure_modules(args.wheels, work / "site")
        header = environment(args.smoke, wheels)
        print("\n".join(header), flush=True)
        deadline = started + args.budget
        env = step_env(work / "site", work)
        results = []
        for step in steps:
            result = execute(step, deadline, out, env)
            results.append(result)
            print(f"[{time.monotonic() - started:4.0f} s] {step.name}: {result.status} ({result.seconds:.0f} s) "
                  f"{result.verdict.figures}", flush=True)
        keep_records(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(results, header, args.budget, time.monotonic() - started, out)
    (out / "report.md").write_text(report)
    print("\n" + report, end="")
    return 0 if all(r.status in ("PASS", "N/A") for r in results) else 1


def select(steps: list[Step], only: str | None) -> list[Step]:
    if not only:
        return steps
    names = [s.name for s in steps]
    unknown = [n for n in only.split(",") if n not in names]
    if unknown:
        raise UserError(f"--only: unknown step {unknown[0]!r}; steps: {', '.join(names)}")
    return [s for s in steps if s.name in only.split(",")]


def dry_run(steps: Sequence[Step], budget: float) -> str:
    lines = [f"{len(steps)} steps under a {budget:.0f} s budget (a step is skipped with less than its minimum "
             "left); each: timeout / minimum"]
    for step in steps:
        lines += [f"{step.name}: {step.timeout_s} s / {step.min_s} s: {step.purpose}",
                  f"    {shlex.join(step.command)}"]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the steps, their limits and commands")
    mode.add_argument("--validate", action="store_true", help="compose and validate every config the check trains")
    mode.add_argument("--fetch-wheels", action="store_true", help="download the pure-Python wheels (needs PyPI)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (tests the check itself)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="global deadline in seconds")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "gpu-check"),
                        help="logs and report.md ($OUT if set, else gpu-check/)")
    parser.add_argument("--only", help="comma-separated step names")
    parser.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="wheels to install when a package "
                        "is missing (default .gpu/wheels); the directory --fetch-wheels fills")
    parser.add_argument("--python-version", default="3.12", help="--fetch-wheels: the GPU node's Python")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    try:
        if args.dry_run:
            print(dry_run(select(plan(Path("<tmp>"), args.smoke), args.only), args.budget))
            return 0
        if args.fetch_wheels:
            fetch_wheels(args.wheels, args.python_version)
            return 0
        if args.validate:
            with tempfile.TemporaryDirectory(prefix="tvlars-gpu-check-") as work:
                ensure_modules(args.wheels, Path(work) / "site")
                names = validate_configs(plan(Path(work), args.smoke))
            print(f"validated the configs of {len(names)} steps: {', '.join(names)}")
            return 0
        return run_check(args, started)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
