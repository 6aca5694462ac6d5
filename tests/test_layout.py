"""The layout the project promises: the top level, one copy of the config tree and the specs (found by tvlars.paths),
and a package whose imports run one way: no cycle, nothing importing a package above it, the run side never
importing the table side, and nothing importing the entry point ``tvlars.train``."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT
from tvlars import paths

PACKAGE = ROOT / "tvlars"
PROMISED = ("configs", "tvlars", "scripts", "experiments", "results", "Makefile", "environment.yml", "README.md")


def test_the_promised_top_level_holds_the_only_copy_of_configs_and_specs() -> None:
    assert all((ROOT / name).exists() for name in PROMISED)
    assert not (PACKAGE / "configs").exists() and not (PACKAGE / "experiments").exists()
    assert Path(paths.CONFIG_DIR) == ROOT / "configs" and paths.EXPERIMENTS_DIR == ROOT / "experiments"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {name for name, p in MODULES.items() if p.name == "__init__.py"}


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path) -> set[str]:
    """The package's modules (and packages) ``path`` imports when it runs: at module level or in a function, not in
    an ``if TYPE_CHECKING:`` block; ``from package import module`` names the module."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                         for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components of the import graph: every one is a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(GRAPH[module]):
            if imported not in index:
                connect(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            connect(module)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_a_package_above_it() -> None:
    """A package's ``__init__`` may import its modules; a module never imports its own packages (the root
    ``tvlars``, which holds only the version, imports nothing)."""
    upward = {(name, imported) for name, imported_names in GRAPH.items() for imported in imported_names
              if imported in PACKAGES and name.startswith(f"{imported}.") and imported != "tvlars"}
    assert not upward, f"imports of an enclosing package: {sorted(upward)}"
    assert not GRAPH["tvlars"]


def test_the_run_side_never_imports_the_table_side_or_the_entry_point() -> None:
    run_side = [name for name in GRAPH if not name.startswith("tvlars.tables")]
    assert not {(n, i) for n in run_side for i in GRAPH[n] if i.startswith("tvlars.tables")}
    assert not {n for n, imported in GRAPH.items() if "tvlars.train" in imported}
