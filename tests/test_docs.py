"""The docs work when pasted: every `python -m tvlars.train` command composes and validates, every `make` target
exists, every relative link (and its #anchor) points at something that is there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import ROOT, compose_config
from tvlars.config import validate

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _code_lines(page: Path) -> list[str]:
    """Shell lines of the page's fenced code blocks, backslash continuations joined, comments dropped."""
    lines, block, fenced = [], "", False
    for raw in page.read_text().splitlines():
        if raw.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        block += raw.rstrip("\\").rstrip() + " " if raw.endswith("\\") else raw
        if not raw.endswith("\\"):
            lines.append(block.split("  #")[0].strip())
            block = ""
    return lines


def _train_commands() -> list[tuple[str, str]]:
    commands = []
    for page in PAGES:
        for line in _code_lines(page):
            match = re.search(r"(?:python -m tvlars\.train|tvlars-train)((?: [^|;&]*)?)", line)
            if match:
                commands.append((page.name, match.group(1).strip()))
    return commands


def _overrides(arguments: str) -> list[str] | None:
    """Hydra overrides of a documented command (the first value of a multirun list, ``<placeholders>`` filled in,
    shell variables as 256); None if only Hydra's own flags are left."""
    arguments = re.sub(r"\$\{?\w+\}?", "256", re.sub(r"<[^>]*>", "placeholder", arguments))
    words = [w for w in shlex.split(arguments) if w not in ("-m", "--multirun")]
    if "--cfg" in words:
        words = words[:words.index("--cfg")] + words[words.index("--cfg") + 2:]
    if any(w.startswith("-") for w in words):
        return None
    out = []
    for word in words:
        key, _, value = word.partition("=")
        if "," in value and not value.startswith("["):
            value = value.split(",")[0]
        out.append(f"{key}={value}")
    return out


COMMANDS = _train_commands()


def test_the_docs_show_training_commands() -> None:
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize(("page", "arguments"), COMMANDS, ids=[f"{p}: {a[:60]}" for p, a in COMMANDS])
def test_documented_training_commands_compose_and_validate(page: str, arguments: str) -> None:
    overrides = _overrides(arguments)
    if overrides is None:
        pytest.skip("Hydra's own flags only")
    validate(compose_config(overrides))


def test_documented_make_targets_exist() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    for page in PAGES:
        for line in _code_lines(page):
            for target in re.findall(r"(?:^|[;&|] *)make ([a-z][a-z-]*)", line):
                assert target in targets, f"{page.name}: make {target} is not a Makefile target"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_and_anchors_resolve() -> None:
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.name}: link to {target} (no {resolved})"
            if anchor and resolved.suffix == ".md":
                assert anchor in _anchors(resolved), f"{page.name}: no heading #{anchor} in {resolved.name}"


def _example_files(page: Path) -> dict[str, str]:
    """The code blocks of a page that start with ``# file: <path>``, by path."""
    blocks = re.findall(r"```(?:python|yaml)\n# file: (\S+)\n(.*?)```", page.read_text(), re.S)
    return {path: body for path, body in blocks}


@pytest.fixture
def extending(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """docs/extending.md's example modules imported under their documented names (and unregistered afterwards)."""
    import importlib.util
    import sys

    from tvlars.data import registry

    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    files = _example_files(ROOT / "docs" / "extending.md")
    for path, body in files.items():
        if path.startswith("tvlars/") and path.endswith(".py"):
            name = path[:-3].replace("/", ".")
            module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
            monkeypatch.setitem(sys.modules, name, module)
            exec(compile(body, path, "exec"), module.__dict__)  # noqa: S102 - the documented example itself
    return files


def test_extending_examples_are_complete(extending: dict[str, str]) -> None:
    kinds = {path.split("/")[1] if path.startswith("tvlars/") else path.split("/")[0] for path in extending}
    assert {"optim", "configs", "data", "tasks", "experiments", "tests"} <= kinds


def test_extending_optimizer_example_runs(extending: dict[str, str]) -> None:
    import torch
    from omegaconf import OmegaConf

    from tvlars.config import instantiate_node

    namespace: dict = {}
    exec(compile(extending["tests/optim/test_larsc.py"], "test_larsc.py", "exec"), namespace)  # noqa: S102
    namespace["test_larsc_is_lars_with_the_ratio_clipped"]()
    node = OmegaConf.create(extending["tvlars/configs/optimizer/larsc.yaml"])
    params = [torch.nn.Parameter(torch.ones(3, 3))]
    optimizer = instantiate_node(node, "optimizer", params=params, lr=node.lr)
    assert type(optimizer).__name__ == "LARSC" and optimizer.param_groups[0]["clip_max"] == 0.01
    from tvlars.errors import UserError

    with pytest.raises(UserError, match="clip_max must be > 0"):
        instantiate_node(OmegaConf.merge(node, {"clip_max": -1}), "optimizer", params=params, lr=1.0)


def test_extending_dataset_example_loads_its_fake(extending: dict[str, str], tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from tvlars.config import DATASET_KEYS, instantiate_node
    from tvlars.data import train_size, write_fake

    node = OmegaConf.create({"data_root": str(tmp_path),
                             "dataset": OmegaConf.create(extending["tvlars/configs/dataset/flowers.yaml"])})
    assert train_size(node.dataset) == 3000
    write_fake("flowers", tmp_path, 12, 6)
    data = instantiate_node(node.dataset, "dataset", skip=DATASET_KEYS)
    assert len(data.train) == 12 and len(data.test) == 6 and data.info.num_classes == 3


def test_extending_task_example_trains_without_host_syncs(extending: dict[str, str]) -> None:
    import sys

    import torch
    from omegaconf import OmegaConf

    from tests.nosync import NoHostSync
    from tvlars.config import instantiate_node

    task = instantiate_node(OmegaConf.create(extending["tvlars/configs/task/mixup.yaml"]), "task", device="cpu")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    batch = (torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,)))
    task.training_step(model, batch)
    with NoHostSync():
        loss, sums = task.training_step(model, batch)
    assert torch.isfinite(loss) and sums["count"] == 8 and "tvlars.tasks.mixup" in sys.modules


def test_extending_table_example_loads(extending: dict[str, str], tmp_path: Path) -> None:
    from tvlars.spec import load_spec

    path = tmp_path / "larsc-fmnist.yaml"
    path.write_text(extending["tvlars/experiments/larsc-fmnist.yaml"])
    spec = load_spec(path)
    assert [r.label for r in spec.rows] == ["LARS, no warm-up", "LARSC, no warm-up"]
    assert len(spec.jobs()) == 2 * 2 * 4
