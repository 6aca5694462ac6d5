"""make gpu-check without a GPU (tvlars.gpu_check through scripts/gpu_check.py): refusal, --validate, --dry-run,
the budget (planned times that add up, minimums kept for later steps, SLOW for a late pass), timeouts, the verdicts
read from each step's outputs, the preflight (imports, offline wheels, a fake torch-only node, the compiler), the
peak table, and (slow) a --smoke run on the CPU."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, cli_env
from tvlars.errors import UserError
from tvlars.gpu_check import cli, plan, preflight, runner, verdicts
from tvlars.gpu_check.plan import Step
from tvlars.gpu_check.verdicts import Verdict
from tvlars.sizing import bf16_peak, flops_per_image

SCRIPT = str(ROOT / "scripts" / "gpu_check.py")


def step(name: str, command: list[str], planned_s: int = 30, min_s: int = 0, **kwargs: object) -> Step:
    summarize = kwargs.pop("summarize", lambda s, log: Verdict(True, "fine"))
    return Step(name, "test", planned_s, min_s, tuple(command), summarize, **kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the refusal without CUDA")
def test_refuses_without_cuda_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path)], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no CUDA device" in lines[0]


def test_validate_composes_every_training_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--validate", "--out", str(tmp_path)]) == 0
    trained = [s.name for s in plan.plan(tmp_path) if s.overrides]
    assert trained == ["train-eager", "train-compile", "ddp-classification", "ddp-barlow-twins"]
    assert capsys.readouterr().out.strip().endswith(", ".join(trained))
    assert plan.validate_configs(plan.plan(tmp_path, smoke=True)) == trained


@pytest.mark.parametrize("bad", ["optimizer=nope", "batch_size=0"])
def test_validate_names_the_step_of_a_bad_config(bad: str) -> None:
    with pytest.raises(UserError, match="^step broken: "):
        plan.validate_configs([step("broken", ["true"], overrides=(*plan.TRAIN, bad))])


def test_dry_run_lists_every_step_with_its_times(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    for s in plan.plan(Path("<tmp>")):
        assert f"{s.name}: {s.planned_s} s / {s.min_s} s" in out
    assert "-m torch.distributed.run --standalone --nproc_per_node=1 -m tvlars.train" in out
    assert "compile=true" in out and "-m cuda" in out and "bench_optim.py --device cuda" in out


def test_unknown_step_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--dry-run", "--only", "train-eager,nope"]) == 2
    assert capsys.readouterr().err.startswith("error: --only: unknown step 'nope'")


def test_cuda_tests_are_found_by_their_marker() -> None:
    files = set(plan.cuda_test_files())
    assert {"tests/test_cuda.py", "tests/data/test_batch_transforms.py", "tests/optim/test_optim_resume.py"} <= files


def test_the_planned_times_add_up_to_the_budget() -> None:
    """On one H100 with cold caches the whole plan fits the default budget, with room for the preflight."""
    steps = plan.plan(Path("<tmp>"))
    assert sum(s.planned_s for s in steps) <= plan.DEFAULT_BUDGET_S - 10
    assert all(s.min_s <= s.planned_s for s in steps)


def _state(pid: int) -> str:
    """The process's state letter (Z = zombie), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_hanging_step_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    hang = step("hang", ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"])
    result = runner.execute(hang, time.monotonic() + runner.STOP_S + 2, tmp_path, {"PATH": "/usr/bin:/bin"})
    assert result.status == "TIMEOUT"
    assert _state(int(pid_file.read_text())) in ("gone", "Z")


def test_step_outcomes(tmp_path: Path) -> None:
    deadline = time.monotonic() + 100
    env = cli_env()
    results = {s.name: runner.execute(s, deadline, tmp_path, env) for s in [
        step("ok", ["true"]),
        step("late", ["sleep", "1.2"], planned_s=1),
        step("exit", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]),
        step("bad-output", ["true"], summarize=lambda s, log: Verdict(False, "status failed")),
        step("broken-summary", ["true"], summarize=lambda s, log: 1 / 0),
        step("missing", ["true"], needs=("scripts/not_there.py",)),
    ]}
    assert {name: r.status for name, r in results.items()} == {
        "ok": "PASS", "late": "SLOW", "exit": "FAIL", "bad-output": "FAIL", "broken-summary": "FAIL", "missing": "N/A"}
    assert results["late"].verdict.figures.startswith("correct but slow: 1 s, planned 1 s; fine")
    assert results["exit"].verdict.figures == "exit code 3" and "boom" in results["exit"].verdict.details
    assert "ZeroDivisionError" in results["broken-summary"].verdict.figures
    assert (tmp_path / "ok.log").read_text().startswith("$ true")


def test_the_budget_skips_a_step_that_no_longer_fits(tmp_path: Path) -> None:
    result = runner.execute(step("late", ["true"], min_s=60), time.monotonic() + 30, tmp_path, cli_env())
    assert result.status == "SKIP" and not (tmp_path / "late.log").exists()
    kept = runner.execute(step("kept", ["true"], min_s=10), time.monotonic() + 30, tmp_path, cli_env(), reserve_s=15)
    assert kept.status == "SKIP" and "15 s of it kept for the later steps" in kept.verdict.figures


def test_a_step_past_its_plan_runs_on_but_leaves_the_later_steps_their_minimum(tmp_path: Path) -> None:
    """A slow step may use the time left, but not the minimum of the steps after it: it is killed there."""
    steps = [step("hangs", ["sleep", "60"], planned_s=1), step("next", ["true"], min_s=3)]
    assert runner.reserve(steps[1:]) == 3 + runner.STOP_S
    started = time.monotonic()
    results = runner.run_all(steps, started + 2 * runner.STOP_S + 6, tmp_path, cli_env(), lambda result: None)
    assert [r.status for r in results] == ["TIMEOUT", "PASS"]
    assert 2.5 < results[0].seconds < 4.5  # killed 3 s in: the deadline less its own stop and the next step's due


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="t" name="test_resume[lars]"/>
<testcase classname="t" name="test_resume[lamb]"><failure message="RuntimeError: on two devices&#10;more">tb</failure>
</testcase>
<testcase classname="t" name="test_step[sgd-eager]"><skipped message="no fused option"/></testcase>
<testcase classname="t" name="test_step[sgd-default]"/>
</testsuite></testsuites>"""


def test_summarize_tests_reads_pytest_junit(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    verdict = verdicts.summarize_tests(junit)
    assert not verdict.ok and verdict.figures == "2 passed, 1 failed, 1 skipped"
    assert verdict.details == ["test_resume: 1 failed, 1 passed", "test_step: 1 passed, 1 skipped",
                               "FAILED test_resume[lamb]: RuntimeError: on two devices"]
    junit.write_text(JUNIT.replace('<failure message="', '<skipped message="').replace("</failure>", "</skipped>"))
    assert verdicts.summarize_tests(junit).ok
    junit.write_text('<testsuite><testcase name="t"><skipped message="needs CUDA"/></testcase></testsuite>')
    assert not verdicts.summarize_tests(junit).ok  # nothing ran on the GPU
    assert verdicts.summarize_tests(junit, require_run=False).ok
    assert not verdicts.summarize_tests(tmp_path / "missing.xml").ok


def _run_dir(path: Path, status: str = "completed", **extra: object) -> Path:
    path.mkdir(parents=True)
    rows = [{"epoch": 1, "epoch_time_s": 9.0, "train_images_per_s": 5_000.0},
            {"epoch": 2, "epoch_time_s": 2.0, "train_images_per_s": 24_800.0},
            {"epoch": 3, "epoch_time_s": 1.0, "train_images_per_s": 49_600.0, "test_top1": 97.5}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"status": status, "error": None, "device_name": "NVIDIA H200", "steps_per_epoch": 97,
               "config": {"batch_size": 512}, "final_test_top1": 97.5, "world_size": 1, "steps": 16, **extra}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_summarize_training_reports_epochs_target_and_tflops(tmp_path: Path) -> None:
    train = step("train-eager", ["true"], overrides=plan.TRAIN, run_dir=_run_dir(tmp_path / "run"))
    verdict = verdicts.summarize_training(train, tmp_path / "log")
    images_per_s = (24_800 + 49_600) / 2  # median of the epochs after the first
    tflops = flops_per_image(plan.TRAIN) * images_per_s / 1e12
    assert verdict.ok
    assert verdict.figures.startswith("epochs 9.00, 2.00, 1.00 s; steady 1.50 s per 49664 images "
                                      "(target <= 1.5 s: met)")
    assert f"{tflops:.3g} TFLOP/s = {tflops / 989:.1%} of the 989 TFLOP/s bf16 peak" in verdict.figures
    failed = step("train-eager", ["true"], overrides=plan.TRAIN, run_dir=_run_dir(tmp_path / "x", "failed"))
    assert not verdicts.summarize_training(failed, tmp_path / "log").ok


NCCL_LOG = """host:1:1 [0] NCCL INFO NCCL version 2.26.2+cuda12.8
host:1:9 [0] NCCL INFO ncclCommInitRankConfig comm 0x5 rank 0 nranks 1 cudaDev 0 nvmlDev 0 busId 1b000 - Init COMPLETE
host:1:1 [0] NCCL INFO Broadcast: opCount 0 sendbuff 0x1 recvbuff 0x1 count 100 datatype 7 op 0 root 0 comm 0x5
host:1:1 [0] NCCL INFO AllReduce: opCount 1 sendbuff 0x1 recvbuff 0x1 count 9 datatype 7 op 0 root 0 comm 0x5
host:1:1 [0] NCCL INFO AllGather: opCount 2 sendbuff 0x1 recvbuff 0x1 count 9 datatype 7 op 0 root 0 comm 0x5
host:1:1 [0] NCCL INFO AllReduce: opCount 3 sendbuff 0x1 recvbuff 0x1 count 9 datatype 7 op 0 root 0 comm 0x5
"""


def test_summarize_ddp_needs_an_nccl_communicator(tmp_path: Path) -> None:
    log = tmp_path / "ddp.log"
    log.write_text(NCCL_LOG)
    communicators, collectives = verdicts.nccl_activity(NCCL_LOG)
    assert communicators == [1] and collectives == {"AllReduce": 2, "Broadcast": 1, "AllGather": 1}
    ddp = step("ddp", ["true"], run_dir=_run_dir(tmp_path / "run"))
    verdict = verdicts.summarize_ddp(ddp, log)
    assert verdict.ok and "NCCL communicators [1]" in verdict.figures and "AllReduce x2" in verdict.figures
    assert "world size 1 (one rank)" in verdict.figures
    log.write_text("no NCCL here\n")
    assert not verdicts.summarize_ddp(ddp, log).ok
    assert verdicts.summarize_ddp(ddp, log, nccl=False).ok  # --smoke: gloo on the CPU


def test_summarize_ddp_needs_finite_sharpness_where_it_was_measured(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path / "run")
    ddp = step("ddp", ["true"], run_dir=run_dir)
    (run_dir / "sharpness.jsonl").write_text('{"step": 8, "lambda_max": 12.5}\n{"step": 16, "lambda_max": 9.0}\n')
    verdict = verdicts.summarize_ddp(ddp, tmp_path / "log", nccl=False)
    assert verdict.ok and "sharpness through SyncBatchNorm 12.5, 9" in verdict.figures
    (run_dir / "sharpness.jsonl").write_text('{"step": 8, "lambda_max": NaN}\n')
    assert not verdicts.summarize_ddp(ddp, tmp_path / "log", nccl=False).ok


def test_summarize_ddp_barlow_twins_checks_linear_eval_and_the_gather(tmp_path: Path) -> None:
    log = tmp_path / "ddp.log"
    log.write_text(NCCL_LOG)
    done = {"status": "completed"}
    barlow = step("bt", ["true"], run_dir=_run_dir(tmp_path / "run", linear_eval=done))
    verdict = verdicts.summarize_ddp(barlow, log)
    assert verdict.ok and "linear eval completed" in verdict.figures
    assert "WARN: fewer than 2 AllGather per step" in verdict.figures  # 1 AllGather for 16 steps
    log.write_text(NCCL_LOG + "\n".join([NCCL_LOG.splitlines()[4]] * 32))
    assert "WARN" not in verdicts.summarize_ddp(barlow, log).figures
    failed = step("bt", ["true"], run_dir=_run_dir(tmp_path / "x", linear_eval={"status": "failed"}))
    assert not verdicts.summarize_ddp(failed, log).ok


def test_summarize_bench_keeps_the_table(tmp_path: Path) -> None:
    log = tmp_path / "bench.log"
    log.write_text("$ python scripts/bench_optim.py\nResNet-18, cuda\n| optimizer | ms |\n|---|---|\n| SGD | 1.0 |\n")
    verdict = verdicts.summarize_bench(step("bench", ["true"]), log)
    assert verdict.ok and verdict.details == ["ResNet-18, cuda", "", "| optimizer | ms |", "|---|---|", "| SGD | 1.0 |"]
    log.write_text("Traceback ...\n")
    assert not verdicts.summarize_bench(step("bench", ["true"]), log).ok


@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835), ("NVIDIA H200", 989),
    ("NVIDIA H200 NVL", 835), ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A10", 125), ("NVIDIA A10G", 70),
    ("NVIDIA L4", 121), ("NVIDIA L40", 181), ("NVIDIA L40S", 362), ("Tesla V100-SXM2-16GB", None),
    ("NVIDIA GeForce GTX 1080", None)])
def test_bf16_peak_takes_the_longest_matching_name(name: str, tflops: int | None) -> None:
    peak = bf16_peak(name)
    assert (peak if peak is None else round(peak / 1e12)) == tflops


def _fake_wheel(directory: Path, module: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    info = f"{module}-1.0.dist-info"
    with zipfile.ZipFile(directory / f"{module}-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{module}/__init__.py", "VALUE = 1\n")
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")


def test_missing_modules_come_from_the_wheels_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module, compiled = "tvlars_gpu_check_fake", "tvlars_gpu_check_compiled"
    monkeypatch.setattr(preflight, "modules", lambda smoke: [module])
    env = preflight.step_env(tmp_path / "site", tmp_path)
    with pytest.raises(UserError, match=rf"missing modules {module}; .*manifest.json not found: run `make gpu-wheels`"):
        preflight.ensure_modules(tmp_path / "empty", tmp_path / "site", env, smoke=True)
    _fake_wheel(tmp_path / "wheels", module)
    manifest = {"wheels": {module: "1.0"}, "compiled": {}, "modules": {module: module}}
    (tmp_path / "wheels" / "manifest.json").write_text(json.dumps(manifest))
    assert preflight.ensure_modules(tmp_path / "wheels", tmp_path / "site", env, smoke=True) == [
        f"{module}-1.0-py3-none-any.whl"]
    assert (tmp_path / "site" / module / "__init__.py").exists()
    assert env["PYTHONPATH"].startswith(str(tmp_path / "site"))
    # a compiled package the steps import, which no entry module reaches first: named from the manifest
    manifest = {"wheels": {module: "1.0"}, "compiled": {"compiled-dist": "2.0"},
                "modules": {module: module, compiled: "compiled-dist"}}
    (tmp_path / "wheels" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="^cannot start: compiled-dist: compiled packages, install them into"):
        preflight.ensure_modules(tmp_path / "wheels", tmp_path / "site", env, smoke=True)


def test_triton_needs_a_c_compiler_and_the_python_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)
    monkeypatch.setattr(preflight.sysconfig, "get_paths", lambda: {"include": str(tmp_path)})
    with pytest.raises(UserError, match=r"no C compiler \(gcc or clang on PATH, or \$CC\); no Python.h in "):
        preflight.check_compiler()
    (tmp_path / "Python.h").write_text("")
    monkeypatch.setattr(preflight.shutil, "which", lambda name: "/usr/bin/clang" if name.endswith("clang") else None)
    assert preflight.compiler_problems() == []


def _repacked(distribution: str, directory: Path) -> Path:
    """The installed ``distribution`` packed again as a wheel (what ``make gpu-wheels`` downloads, offline)."""
    dist = importlib.metadata.distribution(distribution)
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    wheel = directory / f"{name}-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for file in dist.files or []:
            if not str(file).startswith("..") and dist.locate_file(file).is_file():
                archive.write(dist.locate_file(file), str(file))
    return wheel


def _torch_only_node(root: Path) -> tuple[Path, Path]:
    """A Python environment holding torch, what installing torch brings, and pip: links into this environment's
    site-packages. Returns its python and its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = next(root.glob("lib/python3*/site-packages"))
    return root / "bin" / "python", site


def _link(distributions: set[str], site: Path) -> None:
    """Link every top-level file or folder of ``distributions`` (as installed here) into ``site``."""
    for distribution in distributions:
        dist = importlib.metadata.distribution(distribution)
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (site / top).exists():
                (site / top).symlink_to(dist.locate_file(top))


@pytest.mark.slow
def test_a_torch_only_node_starts_and_names_what_it_lacks(tmp_path: Path) -> None:
    """With only torch, the check says in one line what to bring; with `make gpu-wheels`' wheels, it names the
    compiled packages a node must have; with those installed too, it runs (here: --validate)."""
    python, site = _torch_only_node(tmp_path / "node")
    _link(preflight.brought_by_torch() | {"pip"}, site)
    wheels = tmp_path / "wheels"

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(python), SCRIPT, "--validate", "--smoke", "--wheels", str(wheels)], cwd=ROOT,
                              env={k: v for k, v in cli_env().items() if k != "PYTHONPATH"}, capture_output=True,
                              text=True, timeout=600)

    done = check()
    assert done.returncode == 2 and done.stderr.count("error:") == 1, done.stderr[-2000:]
    assert "manifest.json not found: run `make gpu-wheels`" in done.stderr
    needed = preflight.needed_distributions()
    pure = sorted({d for d in needed.values() if preflight.is_pure(d)})
    wheels.mkdir()
    for distribution in pure:
        _repacked(distribution, wheels)
    versions = {d: importlib.metadata.version(d) for d in needed.values()}
    (wheels / "manifest.json").write_text(json.dumps({
        "wheels": {d: versions[d] for d in pure}, "compiled": {d: v for d, v in versions.items() if d not in pure},
        "modules": needed}))
    done = check()
    assert done.returncode == 2 and done.stderr.count("error:") == 1, done.stderr[-2000:]
    compiled = sorted(set(versions) - set(pure), key=str.lower)
    assert compiled == ["numpy", "pillow", "PyYAML", "torchvision"]
    assert f"cannot start: {', '.join(sorted(compiled))}: compiled packages, install them into {python}" in done.stderr
    _link(set(compiled), site)
    done = check()
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("validated the configs of 4 steps")


@pytest.mark.slow
def test_smoke_run_on_the_cpu_writes_a_passing_report(tmp_path: Path) -> None:
    steps = ("cuda-tests", "train-eager", "ddp-classification", "ddp-barlow-twins")
    stale = tmp_path / "runs" / "train-compile" / "summary.json"  # left by an earlier check
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    done = subprocess.run([sys.executable, SCRIPT, "--smoke", "--only", ",".join(steps), "--out", str(tmp_path)],
                          cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# tvlars GPU check: PASS")
    for name in steps:
        assert f"| {name} | PASS |" in report and (tmp_path / f"{name}.log").exists()
    assert (tmp_path / "runs" / "train-eager" / "summary.json").exists() and (tmp_path / "cuda-tests.xml").exists()
    assert not stale.exists()
    assert report in done.stdout
