"""Every config composes and validates; bad input fails with one readable line before training starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import compose_config, run_cli, tiny
from tvlars.cli import check_composition
from tvlars.config import resolved_lr, run_id, validate
from tvlars.errors import UserError
from tvlars.paths import CONFIG_DIR
from tvlars.run import run

GROUPS = ["dataset", "model", "task", "optimizer", "schedule", "logger"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((Path(CONFIG_DIR) / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_and_validates(group: str, option: str) -> None:
    cfg = compose_config([f"{group}={option}"])
    validate(cfg)
    assert cfg[group]["_target_"]


def test_the_fused_step_is_not_part_of_the_run_id() -> None:
    eager, fused = (compose_config(["optimizer=lars", f"optimizer.fused={v}"]) for v in ("false", "true"))
    assert run_id(eager) == run_id(fused) != run_id(compose_config(["optimizer=lars", "optimizer.lr=3"]))


def test_lr_scaling_rules() -> None:
    base = ["optimizer=sgd", "optimizer.lr=0.1", "batch_size=1024"]
    assert resolved_lr(compose_config([*base, "lr_scaling=none"])) == pytest.approx(0.1)
    assert resolved_lr(compose_config([*base, "lr_scaling=linear"])) == pytest.approx(0.4)
    assert resolved_lr(compose_config([*base, "lr_scaling=sqrt"])) == pytest.approx(0.2)


def test_run_id_ignores_paths_and_logging_but_not_hyperparameters() -> None:
    a = compose_config(["out_dir=/a", "logger=none", "data_root=/x"])
    b = compose_config(["out_dir=/b", "logger=wandb", "data_root=/y", "log_every=7", "data.on_device=false",
                        "deterministic=true"])
    c = compose_config(["optimizer.lr=0.2"])
    assert run_id(a) == run_id(b) != run_id(c)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["batch_size=0"], "batch_size must be >= 1"),
        (["batch_size=-4"], "batch_size must be >= 1"),
        (["epochs=0"], "epochs must be >= 1"),
        (["optimizer.lr=-0.1"], "optimizer.lr must be >= 0"),
        (["optimizer.weight_decay=-1"], "optimizer.weight_decay must be >= 0"),
        (["data.on_device=yes"], "data.on_device must be auto, true or false"),
        (["data.on_device=1"], "data.on_device must be auto, true or false"),
        (["dataset=synthetic", "dataset.noise=nan"], r"^dataset.noise must be a finite number \(got nan\)$"),
        (["optimizer.lr=inf"], r"^optimizer.lr must be a finite number \(got inf\)$"),
        (["optimizer=adamw", "optimizer.betas=[0.9,-inf]"], r"^optimizer.betas\[1\] must be a finite number"),
        (["schedule=warmup_cosine", "schedule.floor=nan"], r"^schedule.floor must be a finite number"),
        (["target.metric=test_top1", "target.value=inf"], r"^target.value must be a finite number"),
    ],
)
def test_range_errors_name_the_key(overrides: list[str], needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        validate(compose_config(overrides))


def test_batch_must_divide_by_world_size() -> None:
    with pytest.raises(UserError, match="not divisible by the world size 3"):
        validate(compose_config(["batch_size=512"]), world_size=3)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["optimizer=nosuch"], "unknown option optimizer=nosuch; available: "),
        (["batchsize=3"], "unknown config key 'batchsize'"),
        (["optimizer.momentm=0.3"], "unknown config key 'optimizer.momentm'"),
        (["precision=fp16"], "precision: Invalid value 'fp16'"),
    ],
)
def test_composition_errors_are_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        check_composition(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_unknown_target_option_is_reported(tiny_cfg) -> None:
    cfg = tiny_cfg()
    cfg.model.depth = 18
    with pytest.raises(UserError, match="model.stem must be one of"):
        cfg.model.stem = "vit"
        run(cfg)


def test_missing_dataset_fails_before_anything_is_written(tmp_path: Path, tiny_cfg) -> None:
    cfg = tiny_cfg("dataset=cifar10", f"data_root={tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match=str(tmp_path / "nowhere")):
        run(cfg)
    assert not (tmp_path / "run").exists()


def test_batch_larger_than_dataset_is_rejected(tiny_cfg) -> None:
    with pytest.raises(UserError, match="exceeds the training set"):
        run(tiny_cfg("batch_size=512"))


def test_unwritable_output_dir(tiny_cfg, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="is not writable"):
        run(tiny_cfg(f"run_dir={blocker / 'run'}"))


def test_corrupt_checkpoint_is_reported(tiny_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="checkpoint .* is corrupt"):
        run(tiny_cfg())
    assert not (run_dir / "summary.json").exists()


def test_cli_prints_one_error_line_and_exits_2(tmp_path: Path) -> None:
    result = run_cli(tiny(f"out_dir={tmp_path}", "dataset=cifar10", f"data_root={tmp_path / 'none'}"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: CIFAR-10 not found"), result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_closure_optimizers_refuse_compile() -> None:
    with pytest.raises(UserError, match="compile=true cannot be used with optimizer"):
        validate(compose_config(["optimizer=cdat", "compile=true"]))
