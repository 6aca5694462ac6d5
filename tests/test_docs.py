"""The docs work when pasted: every `python -m tvlars.train` command composes and validates, every `make` target
exists, every relative link (and its #anchor) points at something that is there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT, compose_config

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
