"""Run records → one pandas row per run, from a directory tree of run directories or a W&B project.

A run is placed in a table by ``config.labels`` (``table``, ``row``, ``column``, ``point``), which jobs
launched from an experiment spec carry. Nothing here opens checkpoints or re-runs anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tvlars.errors import UserError
from tvlars.records import Status

# Summary numbers (``lr``: the resolved base LR); steps/images/time to target are null (NaN here) when the run never
# reached its target.
METRIC_KEYS = ("best_test_top1", "final_test_top1", "best_test_top5", "final_test_top5", "images_per_s",
               "wall_time_s", "steps_to_target", "images_to_target", "time_to_target_s", "best_val_top1",
               "final_val_top1", "final_val_top1_rawbn", "final_test_top1_rawbn", "final_train_top1",
               "final_train_loss", "lr")
INTEGER_KEYS = ("seed", "epochs_completed", "steps_per_epoch", "num_classes")
# Where and with what a run ran, as its summary states it (tvlars.provenance.environment, the data path): RUN.md.
PROVENANCE_KEYS = ("code_hash", "git_commit", "git_dirty", "git_diff_hash", "device", "device_name", "world_size",
                   "versions", "data_path")
COLUMNS = ("table", "row", "column", "seed", "point", "status", *METRIC_KEYS, "run_dir", "epochs_completed",
           "steps_per_epoch", "num_classes", "epochs", "optimizer", "task", "config", "provenance", "path", "error",
           "problem")
WANDB_PREFIX = "wandb:"


def _default_api() -> Any:
    import wandb

    return wandb.Api()


# Builds the W&B public API client; tests replace it with a fake (no network).
api_factory: Callable[[], Any] = _default_api


def normalize(value: Any) -> Any:
    """A value in the form used for matching: numbers (and numeric strings) become floats, containers recurse.

    Grid values travel through YAML and Hydra overrides (``1e-3`` may arrive as a string, ``1`` as an int),
    so runs and specs are compared in this form.
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    return str(value)


def point_key(point: Mapping[str, Any] | None) -> str:
    """Canonical JSON of a grid point (sorted keys, normalized values)."""
    return json.dumps(normalize(dict(point or {})), sort_keys=True)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int_or_none(value: Any) -> int | None:
    number = _number(value)
    return int(number) if math.isfinite(number) else None


def _target(config: Mapping[str, Any], group: str) -> str | None:
    node = config.get(group)
    return node.get("_target_") if isinstance(node, Mapping) else None


def summary_problem(summary: Any) -> str | None:
    """Why a parsed ``summary.json`` cannot be used (wrong type of a field the tables read), or ``None``."""
    if not isinstance(summary, Mapping):
        return f"not a JSON object but {type(summary).__name__}"
    config = summary.get("config", {})
    if not isinstance(config, Mapping):
        return f"config is {config!r}, not a mapping"
    labels = config.get("labels", {})
    if not isinstance(labels, Mapping):
        return f"config.labels is {labels!r}, not a mapping"
    if labels.get("point") is not None and not isinstance(labels["point"], Mapping):
        return f"config.labels.point is {labels['point']!r}, not a mapping"
    if not isinstance(summary.get("status", ""), str):
        return f"status is {summary['status']!r}, not a string"
    for key in (*METRIC_KEYS, *INTEGER_KEYS):
        value = summary.get(key, config.get(key) if key == "seed" else None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"{key} is {value!r}, not a number"
    return None


def _row(summary: Mapping[str, Any], config: Mapping[str, Any], status: str, run_dir: str, path: str) -> dict:
    labels = config.get("labels") if isinstance(config.get("labels"), Mapping) else {}
    seed = summary.get("seed", config.get("seed"))
    error = summary.get("error")
    return {
        "table": labels.get("table"), "row": labels.get("row"), "column": labels.get("column"),
        "seed": _int_or_none(seed), "point": point_key(labels.get("point")) if "point" in labels else None,
        "status": status, **{k: _number(summary.get(k)) for k in METRIC_KEYS}, "run_dir": run_dir,
        "epochs_completed": _int_or_none(summary.get("epochs_completed")),
        "steps_per_epoch": _int_or_none(summary.get("steps_per_epoch")),
        "num_classes": _int_or_none(summary.get("num_classes")), "epochs": _int_or_none(config.get("epochs")),
        "optimizer": _target(config, "optimizer"), "task": _target(config, "task"), "config": dict(config),
        "provenance": {key: summary[key] for key in PROVENANCE_KEYS if key in summary}, "path": path,
        "error": str(error).strip().splitlines()[0] if error else None, "problem": None,
    }


def _corrupt(path: str, run_dir: str, problem: str) -> dict:
    return {**dict.fromkeys(COLUMNS), **dict.fromkeys(METRIC_KEYS, math.nan), "status": "corrupt",
            "run_dir": run_dir, "path": path, "config": {}, "provenance": {}, "problem": problem}


def _is_follow_up(summary: Mapping[str, Any]) -> bool:
    """A run that evaluated another one (``labels.follow_up_of``, e.g. the linear evaluation after SSL
    pre-training): its parent's summary already holds its metrics."""
    labels = summary.get("config", {}).get("labels") if isinstance(summary.get("config"), Mapping) else None
    return isinstance(labels, Mapping) and bool(labels.get("follow_up_of"))


def read_summary(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A ``summary.json`` and ``None``, or ``None`` and why it cannot be used (unreadable, not UTF-8 JSON, fields
    of the wrong type)."""
    try:
        summary = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg}, line {exc.lineno}"
    problem = summary_problem(summary)
    return (None, problem) if problem else (dict(summary), None)


def _from_directory(root: Path) -> list[dict]:
    """Rows of every run below ``root``; ``path`` is ``<run dir name>/summary.json`` (as shown in tables, which
    must not depend on where the records lie)."""
    rows = []
    for path in sorted(root.rglob("summary.json")):
        shown = f"{path.parent.name}/summary.json"
        summary, problem = read_summary(path)
        if summary is None:
            rows.append(_corrupt(shown, str(path.parent), problem or "unreadable"))
            continue
        if _is_follow_up(summary):
            continue
        config = summary.get("config") or {}
        rows.append(_row(summary, config, str(summary.get("status", "unknown")), str(path.parent), shown))
    return rows


def _wandb_status(state: str, summary: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """W&B keeps the exit state, not our status string: a finished run that stopped short diverged."""
    state = state.lower()
    if state in ("running", "pending"):
        return Status.running.value
    if state != "finished":
        return Status.failed.value
    done, planned = _number(summary.get("epochs_completed")), _number(config.get("epochs"))
    return (Status.diverged if done < planned else Status.completed).value


def _from_wandb(path: str, runs: Iterable[Any]) -> list[dict]:
    rows = []
    for run in runs:
        config = dict(run.config or {})  # nested, as logged (the resolved run config)
        raw = run.summary
        summary = {key[len("summary/"):]: raw.get(key) for key in raw.keys() if str(key).startswith("summary/")}
        status = _wandb_status(str(getattr(run, "state", "finished")), summary, config)
        run_dir = f"{WANDB_PREFIX}{path}/{run.id}"
        rows.append(_row(summary, config, status, run_dir, run_dir))
    return rows


def collect(source: str | Path) -> pd.DataFrame:
    """One row per run found in ``source`` (a directory searched recursively, or ``wandb:<entity>/<project>``).

    Unreadable ``summary.json`` files (and fields of the wrong type) give a row with ``status="corrupt"`` and the
    reason in ``problem``; missing keys give NaN/None; a failed run's one-line ``error`` is in ``error``.
    Raises :class:`UserError` when the source itself cannot be read.
    """
    text = str(source)
    if text.startswith(WANDB_PREFIX):
        project = text[len(WANDB_PREFIX):].strip("/")
        if project.count("/") != 1:
            raise UserError(f"W&B source must be wandb:<entity>/<project> (got {text!r})")
        try:
            rows = _from_wandb(project, api_factory().runs(project))
        except Exception as exc:  # noqa: BLE001 - network, auth and lookup errors all mean "cannot read"
            raise UserError(f"cannot read W&B project {project} ({type(exc).__name__}: {exc}); "
                            "check the name and `wandb login`") from None
    else:
        root = Path(source)
        if not root.is_dir():
            raise UserError(f"run source {root} is not a directory; run `make reproduce-table` first, or pass "
                            "--source <runs dir> or wandb:<entity>/<project>")
        rows = _from_directory(root)
    return pd.DataFrame(rows, columns=list(COLUMNS))
