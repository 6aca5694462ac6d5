"""The steps of the check, most important first, with their configs and planned times."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tvlars.errors import UserError
from tvlars.gpu_check.verdicts import Verdict, summarize_bench, summarize_ddp, summarize_tests, summarize_training

CHECKOUT = Path(__file__).resolve().parents[2]  # the tests and scripts the steps run live in the checkout
DEFAULT_BUDGET_S = 450  # 7.5 minutes of steps: with the preflight and the report the check stays under 8

# CIFAR-shaped synthetic images (3x32x32, CIFAR's crop + flip) through a full-width ResNet-18 in bf16, channels-last,
# on the device path; TRAIN: a CIFAR-10-sized epoch (50 000 images), the setting of the 1.5 s epoch target.
CIFAR_SHAPED = ("dataset=synthetic", "dataset.channels=3", "dataset.image_size=32", "dataset.augment.crop_padding=4",
                "dataset.augment.hflip=true", "model=resnet18", "model.width=1.0", "batch_size=512", "precision=bf16",
                "channels_last=true", "data.on_device=true", "device=cuda", "logger=none", "progress=lines",
                "checkpoint_every=0")
TRAIN = (*CIFAR_SHAPED, "dataset.num_train=50000", "dataset.num_test=10000", "optimizer=sgd", "optimizer.lr=0.1",
         "epochs=3", "eval_every=3")
# sharpness (double backward) through the SyncBatchNorm of a one-process torchrun, which runs plain batch norm
DDP_CLASSIFICATION = (*CIFAR_SHAPED, "dataset.num_train=8192", "dataset.num_test=2048", "optimizer=lars", "epochs=2",
                      "log_sharpness_every=8", "sharpness_iters=2", "sharpness_batch=64")
DDP_BARLOW_TWINS = (*CIFAR_SHAPED, "dataset.num_train=4096", "dataset.num_test=1024", "task=barlow_twins",
                    "optimizer=lars", "epochs=1", "task.linear_eval.epochs=2")
# --smoke: appended to every training config (later overrides win): toy sizes on the CPU.
SMOKE = ("device=cpu", "dataset.num_train=256", "dataset.num_test=128", "dataset.image_size=16", "model.width=0.0625",
         "batch_size=64", "eval_batch_size=128", "epochs=2")
SMOKE_SSL = ("task.projector_dims=[64,64]", "task.linear_eval.epochs=1")
# NCCL logs every communicator it creates (INIT) and every collective it runs (COLL): proof of the DDP path.
NCCL_ENV = {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,COLL"}


@dataclass(frozen=True)
class Step:
    name: str
    purpose: str
    planned_s: int  # expected on one H100 with cold caches; the plan's steps add up to at most the budget
    min_s: int  # not started with less than this left of the budget (and kept for it by the steps before)
    command: tuple[str, ...]
    summarize: Callable[[Step, Path], Verdict]  # (step, its log file) -> verdict, after a zero exit code
    overrides: tuple[str, ...] = ()  # the training config (validated by --validate)
    run_dir: Path | None = None
    env: tuple[tuple[str, str], ...] = ()
    needs: tuple[str, ...] = ()  # files of the checkout the step runs; missing -> N/A


def cuda_test_files() -> list[str]:
    """Test files that use the ``cuda`` marker (the CUDA-only tests)."""
    return [str(p.relative_to(CHECKOUT)) for p in sorted((CHECKOUT / "tests").rglob("test_*.py"))
            if "pytest.mark.cuda" in p.read_text()]


def plan(work: Path, smoke: bool = False) -> list[Step]:
    """The steps in order of priority (a step that no longer fits the budget is skipped); their outputs go to
    ``work``, a fresh directory. Planned times: one H100 with cold Inductor and Triton caches, estimates until the
    first real check. The CUDA tests compile about 30 fused optimizer updates (every preset's two parameter groups
    on a small network, the round trip through a CPU-mapped checkpoint, three fused resumes), ``train-compile`` a
    ResNet-18 (60-90 s), ``bench-optim`` four fused steps on ResNet-18's parameters."""
    py = sys.executable
    size = SMOKE if smoke else ()

    def train(name: str, base: tuple[str, ...], *extra: str) -> tuple[tuple[str, ...], Path]:
        return (*base, *extra, *size), work / "runs" / name

    pytest_timeout = ("--timeout=120",) if importlib.util.find_spec("pytest_timeout") else ()
    tests = cuda_test_files()
    steps = [Step("cuda-tests", "CUDA-only tests: no host sync in optimizer steps and whole training steps of every "
                  "task x optimizer family, resume on CUDA per family (eager and fused), the fused step against the "
                  "eager one and after a CPU-mapped checkpoint, batched transforms",
                  190, 60, (py, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                            f"--junitxml={work / 'cuda-tests.xml'}", *pytest_timeout, *tests),
                  lambda step, log: summarize_tests(work / "cuda-tests.xml", require_run=not smoke),
                  needs=tuple(tests) or ("tests/test_cuda.py",))]
    for name, compiled, planned_s, min_s in (("train-eager", "false", 45, 30), ("train-compile", "true", 95, 70)):
        overrides, run_dir = train(name, TRAIN, f"compile={compiled}")
        steps.append(Step(name, f"ResNet-18 (full width) on 50 000 CIFAR-shaped images, bf16, channels-last, device "
                          f"path, compile={compiled}: steady epoch time vs the 1.5 s target, TFLOP/s vs bf16 peak",
                          planned_s, min_s, (py, "-m", "tvlars.train", *overrides, f"run_dir={run_dir}"),
                          summarize_training, overrides, run_dir))
    torchrun = (py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "tvlars.train")
    for name, base, extra, planned_s, min_s, purpose in (
            ("ddp-classification", DDP_CLASSIFICATION, (), 35, 20, "classification, LARS, sharpness"),
            ("ddp-barlow-twins", DDP_BARLOW_TWINS, SMOKE_SSL if smoke else (), 40, 30,
             "Barlow Twins pre-training (LARS) + linear evaluation")):
        overrides, run_dir = train(name, base, *extra)
        steps.append(Step(name, f"1-process torchrun ({'gloo' if smoke else 'NCCL'}), the DDP code path on one rank "
                          f"(NCCL across ranks needs two GPUs): {purpose}",
                          planned_s, min_s, (*torchrun, *overrides, f"run_dir={run_dir}"),
                          lambda step, log: summarize_ddp(step, log, nccl=not smoke), overrides, run_dir,
                          env=tuple(NCCL_ENV.items())))
    device, reps = ("cpu", ("--reps", "3", "--warmup", "1")) if smoke else ("cuda", ())
    steps.append(Step("bench-optim", "optimizer step cost on ResNet-18's parameters: eager vs fused vs torch",
                      35, 25, (py, "scripts/bench_optim.py", "--device", device, *reps), summarize_bench,
                      needs=("scripts/bench_optim.py",)))
    return steps


def select(steps: list[Step], only: str | None) -> list[Step]:
    """The steps named in ``only`` (comma-separated), in plan order; all without it."""
    if not only:
        return steps
    names = [s.name for s in steps]
    unknown = [n for n in only.split(",") if n not in names]
    if unknown:
        raise UserError(f"--only: unknown step {unknown[0]!r}; steps: {', '.join(names)}")
    return [s for s in steps if s.name in only.split(",")]


def dry_run(steps: Sequence[Step], budget: float) -> str:
    lines = [f"{len(steps)} steps planned for {sum(s.planned_s for s in steps)} s of a {budget:.0f} s budget (a step "
             "may run past its plan into the time left, keeping each later step its minimum; one that passes late "
             "is SLOW); each: planned / minimum"]
    for step in steps:
        lines += [f"{step.name}: {step.planned_s} s / {step.min_s} s: {step.purpose}",
                  f"    {shlex.join(step.command)}"]
    return "\n".join(lines)


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
