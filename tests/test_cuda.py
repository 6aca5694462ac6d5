"""CUDA-only checks (marker ``cuda``: skipped without a CUDA device; ``make gpu-check`` runs them on a GPU node).

- **No host synchronisation** (``torch.cuda.set_sync_debug_mode("error")``: any synchronising CUDA call raises) in
  the steady state of every optimizer preset's step (eager, and the fused step where the optimizer has ``fused``)
  and of whole training steps of every task × optimizer family: the device path's batch and augmentation, the LR
  schedule, forward and loss, backward, the optimizer step, the task's after-step work and the schedule's
  observation. The first steps run outside the check: lazy state, cuDNN autotuning and compilation may sync.
- **Resume on CUDA** for every optimizer family: a run checkpointed after its first epoch, read back through
  ``torch.load(map_location="cpu")`` as a resumed run does, has the optimizer's state back on the GPU and trains its
  second epoch like the run that went on without interruption; with the eager step, and with the fused step for
  one family per compiled update (LARS's, LAMB's, and CDAT's base).
- **The fused step equals the eager one on CUDA** for every preset that has one (Inductor's CUDA kernels).

The last test (no CUDA needed) composes and validates every config used here, so they stay valid in ``make test``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from tests.helpers import compose_config, tiny
from tests.optim.optim_cases import quartic_closure, relative_error, tiny_bn_net
from tvlars import distributed
from tvlars.build import build
from tvlars.config import CONFIG_DIR, instantiate_node, resolved_lr, validate
from tvlars.engine import Engine, TrainState
from tvlars.optim import param_groups
from tvlars.records import RunRecords
from tvlars.tasks.linear_eval import save_backbone


def needs_cuda(test: Any) -> Any:
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")(test))


# A tiny run as users run it on a GPU: bf16, channels-last, the device path with random crops and flips;
# 8 steps per epoch, so the checked steps never reach an epoch end (where AutoWU's test syncs by design).
DEVICE = "cuda"
ON_GPU = (f"device={DEVICE}", "data.on_device=true", "precision=bf16", "channels_last=true", "dataset.num_train=512",
          "dataset.augment.crop_padding=2", "dataset.augment.hflip=true")
FAMILIES: dict[str, tuple[str, ...]] = {
    "sgd": ("optimizer=sgd",),
    "adamw": ("optimizer=adamw",),
    "lars": ("optimizer=lars",),
    "tvlars": ("optimizer=tvlars",),
    "lamb": ("optimizer=lamb",),
    "lambc": ("optimizer=lambc",),
    "cdat-lars": ("optimizer=cdat", "optimizer.base=lars"),
    "cdat-lamb": ("optimizer=cdat", "optimizer.base=lamb", "optimizer.lr=0.1"),
    "autowu": ("optimizer=lamb", "schedule=autowu"),
}
TASKS: dict[str, tuple[str, ...]] = {
    "classification": (),
    "barlow_twins": ("task=barlow_twins", "task.projector_dims=[64,64]"),
    "simclr": ("task=simclr", "task.projector_dims=[64,32]"),
}
# Linear evaluation trains with its protocol's SGD (its YAML sets SGD's keys) on a saved backbone.
LINEAR_EVAL = ("task=linear_eval", "model=from_backbone")
STEP_CASES = {f"{task}-{family}": (*TASKS[task], *FAMILIES[family]) for task in TASKS for family in FAMILIES} | {
    "linear_eval-sgd": LINEAR_EVAL}
# The fused resume: one family per compiled update function (LARS's, LAMB's) and CDAT, whose base is compiled.
FUSED_RESUME = ("tvlars", "lamb", "cdat-lamb")
RESUME_CASES = [pytest.param(family, False, id=f"{family}-eager") for family in FAMILIES] + [
    pytest.param(family, None, id=f"{family}-fused") for family in FUSED_RESUME]
PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "optimizer").glob("*.yaml"))


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Inside: every CUDA call that synchronises with the host raises a RuntimeError."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def gpu_config(*overrides: str, fused: bool | None = False) -> DictConfig:
    """The tiny GPU run with ``overrides`` and, where the preset has the option, its eager optimizer step
    (``fused``; ``None``: the default, fused on CUDA): whole steps are checked eagerly, the fused step on its own in
    :func:`test_optimizer_step_does_not_sync` and :func:`test_fused_step_equals_the_eager_step`."""
    cfg = compose_config(tiny(*ON_GPU, *overrides))
    if "fused" in cfg.optimizer:
        cfg.optimizer.fused = fused
    return cfg


def loop_steps(engine: Engine, batches: Iterator[Any], steps: range) -> None:
    """The training loop's per-step work (``Engine.train_epoch`` without its every-``log_every`` host read)."""
    for step in steps:
        engine._set_lr(step)
        loss, _ = engine._train_step(engine._to_device(next(batches)))
        engine.schedule.observe(step, loss)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``backbone.pt`` of the tiny ResNet, for the linear-evaluation task."""
    cfg = compose_config(tiny(*ON_GPU))
    model = instantiate_node(cfg.model, "model", num_classes=10, in_channels=3, image_size=16)
    path = tmp_path_factory.mktemp("backbone") / "backbone.pt"
    save_backbone(path, model, OmegaConf.to_container(cfg.model, resolve=True),
                  {"num_classes": 10, "in_channels": 3, "image_size": 16})
    return path


@needs_cuda
@pytest.mark.parametrize("fused", [None, False], ids=["default", "eager"])
@pytest.mark.parametrize("preset", PRESETS)
def test_optimizer_step_does_not_sync(preset: str, fused: bool | None) -> None:
    cfg = compose_config(tiny(f"optimizer={preset}", f"device={DEVICE}"))
    if fused is False and "fused" not in cfg.optimizer:
        pytest.skip(f"optimizer={preset} has no fused option")
    if "fused" in cfg.optimizer:
        cfg.optimizer.fused = fused
    device = torch.device(DEVICE)
    model = tiny_bn_net().to(device)
    lr = resolved_lr(cfg)
    groups = param_groups(model, float(cfg.optimizer.get("weight_decay", 0.0)))
    optimizer = instantiate_node(cfg.optimizer, "optimizer", params=groups, lr=lr, steps_per_epoch=10, total_steps=100)
    x, y = torch.randn(32, 1, 28, 28, device=device), torch.randint(0, 10, (32,), device=device)

    def closure(create_graph: bool = False) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward(create_graph=create_graph)
        return loss

    def train_step(i: int) -> None:
        for group in optimizer.param_groups:  # a schedule writes a new Python float every step
            group["lr"] = lr * (1.0 - 0.01 * i)
        if getattr(optimizer, "needs_closure", False):
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        getattr(optimizer, "trust_stats", dict)()

    for i in range(3):  # warm-up: state created, fused step compiled
        train_step(i)
    with no_host_sync():
        for i in range(3, 6):
            train_step(i)


@needs_cuda
@pytest.mark.parametrize("preset", PRESETS)
def test_fused_step_equals_the_eager_step(preset: str) -> None:
    """Inductor's CUDA kernels against the eager multi-tensor step on a small BatchNorm network's parameters: 5
    steps on the same gradients (CDAT: on a quartic loss, no matmul, so TF32 plays no part), the LR changing every
    step, parameters within 1e-5 relative (float32: rounding only)."""
    cfg = compose_config(tiny(f"optimizer={preset}", f"device={DEVICE}"))
    if "fused" not in cfg.optimizer:
        pytest.skip(f"optimizer={preset} has no fused option")
    trained = []
    for fused in (None, False):
        cfg.optimizer.fused = fused
        model = tiny_bn_net().to(DEVICE)
        params = list(model.parameters())
        groups = param_groups(model, float(cfg.optimizer.get("weight_decay", 0.0)))
        optimizer = instantiate_node(cfg.optimizer, "optimizer", params=groups, lr=resolved_lr(cfg),
                                     steps_per_epoch=10, total_steps=100)
        generator = torch.Generator().manual_seed(5)
        for i in range(5):
            for group in optimizer.param_groups:
                group["lr"] = resolved_lr(cfg) * (1.0 - 0.05 * i)
            if getattr(optimizer, "needs_closure", False):
                optimizer.step(quartic_closure(optimizer, params))
                continue
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator).to(DEVICE)
            optimizer.step()
        trained.append(params)
    for fused, eager in zip(*trained, strict=True):
        assert relative_error(fused, eager) <= 1e-5


@needs_cuda
@pytest.mark.parametrize("case", STEP_CASES)
def test_training_step_does_not_sync(case: str, backbone: Path) -> None:
    overrides = STEP_CASES[case]
    cfg = gpu_config(*overrides, *([f"backbone={backbone}"] if overrides == LINEAR_EVAL else []))
    engine = build(cfg, distributed.init(cfg.device)).engine
    engine.train_model.train()
    batches = iter(engine.train_loader)  # the epoch's index order: one host-to-device copy per epoch
    loop_steps(engine, batches, range(2))
    with no_host_sync():
        loop_steps(engine, batches, range(2, 5))


def stray_tensors(optimizer_state: Any, device: torch.device, torch_optimizer: bool, path: str = "") -> list[str]:
    """Paths of the tensors in an optimizer's ``state_dict()`` that are not on ``device``; torch's own optimizers
    may keep ``step`` on the CPU (Adam's documented default)."""
    if isinstance(optimizer_state, torch.Tensor):
        cpu_step = torch_optimizer and path.endswith("/step")
        return [] if optimizer_state.device == device or cpu_step else [f"{path} on {optimizer_state.device}"]
    items = optimizer_state.items() if isinstance(optimizer_state, dict) else \
        enumerate(optimizer_state) if isinstance(optimizer_state, list | tuple) else []
    return [s for key, value in items for s in stray_tensors(value, device, torch_optimizer, f"{path}/{key}")]


def parameters(engine: Engine) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in engine.model.named_parameters()}


@pytest.fixture
def restore_determinism(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``deterministic=true`` sets process-wide torch flags: put them back after the test."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.benchmark = benchmark


@needs_cuda
@pytest.mark.parametrize(("family", "fused"), RESUME_CASES)
@pytest.mark.usefixtures("restore_determinism")
def test_resume_on_cuda_trains_like_an_uninterrupted_run(family: str, fused: bool | None, tmp_path: Path) -> None:
    cfg = gpu_config(*FAMILIES[family], "epochs=2", "deterministic=true", f"run_dir={tmp_path}", fused=fused)
    dist = distributed.init(cfg.device, cfg.deterministic)  # both runs take the same kernels
    records = RunRecords(tmp_path)
    records.prepare()
    straight = build(cfg, dist, records).engine
    straight.opts.epochs = 1  # stop after epoch 1 and its checkpoint, as a killed run would
    state = TrainState()
    assert straight.fit(state) == "completed"
    checkpoint = records.load_checkpoint()  # torch.load(map_location="cpu"), as a resumed run reads it
    assert checkpoint is not None
    at_checkpoint = parameters(straight)
    straight.opts.epochs = 2  # the uninterrupted run goes on in memory
    assert straight.fit(state) == "completed"

    resumed = build(cfg, dist).engine
    resumed_state = resumed.load_state_dict(checkpoint)
    device = next(resumed.model.parameters()).device
    torch_optimizer = type(resumed.optimizer).__module__.startswith("torch.")
    assert stray_tensors(resumed.optimizer.state_dict(), device, torch_optimizer) == []
    assert resumed.fit(resumed_state) == "completed"
    assert resumed_state.step == state.step
    # Epoch 2's change of every parameter, to 0.1 % of its size: a lost momentum, step count or schedule state
    # changes it by far more; both runs start epoch 2 from the same weights.
    ends, expected = parameters(resumed), parameters(straight)
    for name, start in at_checkpoint.items():
        torch.testing.assert_close(ends[name] - start, expected[name] - start, rtol=1e-3, atol=1e-6, msg=name)


def test_every_config_here_composes_and_validates(tmp_path: Path) -> None:
    """Runs without CUDA: the configs above stay valid as the config tree changes."""
    configs = [gpu_config(*overrides, f"backbone={tmp_path / 'backbone.pt'}") for overrides in STEP_CASES.values()]
    configs += [gpu_config(*FAMILIES[case.values[0]], "epochs=2", "deterministic=true", fused=case.values[1])
                for case in RESUME_CASES]
    configs += [compose_config(tiny(f"optimizer={preset}", f"device={DEVICE}")) for preset in PRESETS]
    for cfg in configs:
        validate(cfg)
