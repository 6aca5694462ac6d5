"""What a node needs before any step can start: every module the steps import, importable (the pure-Python packages
installed offline from wheels when missing), and, for Triton, a C compiler and Python's headers. Whatever is
missing is said in one line.

``make gpu-wheels`` (:func:`fetch_wheels`, where pip reaches PyPI) imports what the steps import in this
environment, and ships a wheel of every pure-Python distribution they load that torch does not bring, with a
manifest naming the compiled ones, which a node must have installed (numpy, pillow, PyYAML, torchvision).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from tvlars.errors import UserError
from tvlars.gpu_check.plan import CHECKOUT, cuda_test_files

DEFAULT_WHEELS = CHECKOUT / ".gpu" / "wheels"
MANIFEST = "manifest.json"
# The steps' entry points and what they import only when they run (SSL heads, AutoWU's GP, torchrun, the optimizer
# benchmark's model): importing these imports every package a step needs. The CUDA tests' modules are added.
ENTRY_MODULES = ("tvlars.train", "lightly.models.modules.heads", "gpytorch", "linear_operator.utils.errors",
                 "pytest", "torch.distributed.run", "torchvision.models")
GPU_MODULES = ("triton",)  # torch.compile on CUDA (the fused step, compile=true)
# Run by the probed Python: import each module named in argv; print what is missing, what fails otherwise, and the
# top-level modules loaded.
PROBE = """
import importlib, json, sys
missing, broken = {}, {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing[name] = (exc.name or name).split(".")[0]
    except Exception as exc:
        broken[name] = (type(exc).__name__ + ": " + str(exc)).splitlines()[0]
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"missing": missing, "broken": broken, "loaded": loaded}))
"""


def modules(smoke: bool) -> list[str]:
    """What the preflight imports: the entry modules, the CUDA tests' modules, and Triton off ``--smoke``."""
    tests = [path.removesuffix(".py").replace("/", ".") for path in cuda_test_files()]
    return [*ENTRY_MODULES, *tests, *(() if smoke else GPU_MODULES)]


def step_env(site: Path, out: Path) -> dict[str, str]:
    """The environment of the steps (and of the probe): ``site`` (the offline wheels) and the checkout first on
    ``PYTHONPATH``, no W&B, data under ``out``."""
    path = [str(site), str(CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled",
            "TVLARS_DATA": str(out / "data")}


def probe(names: list[str], env: dict[str, str], python: str = sys.executable) -> dict[str, Any]:
    """Import ``names`` in a fresh ``python`` with ``env``: ``{"missing": {module: the missing top-level module},
    "broken": {module: its import error}, "loaded": top-level modules imported}``."""
    done = subprocess.run([python, "-c", PROBE, *names], cwd=CHECKOUT, env=env, capture_output=True, text=True,
                          timeout=600)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{python} cannot run the import check ({reason})")
    return json.loads(lines[-1])


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_here(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def install_wheels(wheels: Path, target: Path) -> list[str]:
    """``pip install --no-index --no-deps --target TARGET`` (offline) of the wheels in ``wheels`` whose distribution
    this Python lacks (one it has is not shadowed); the files installed."""
    files = [f for f in sorted(wheels.glob("*.whl")) if not installed_here(f.name.split("-")[0])]
    if not files:
        return []
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                           "--disable-pip-version-check", "--target", str(target), *map(str, files)],
                          capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise UserError(f"cannot install the wheels in {wheels} ({reason}); rebuild them with `make gpu-wheels`")
    return [f.name for f in files]


def read_manifest(wheels: Path) -> dict[str, Any] | None:
    try:
        return json.loads((wheels / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def diagnosis(found: dict[str, Any], wheels: Path) -> str:
    """One line: what the probe found missing or broken, by distribution where the manifest names it, and how
    to get each."""
    missing = sorted(set(found["missing"].values()))
    broken = [f"{module} ({error})" for module, error in found["broken"].items()]
    manifest = read_manifest(wheels)
    problems = []
    if missing and manifest is None:
        problems.append(f"missing modules {', '.join(missing)}; {wheels / MANIFEST} not found: run `make gpu-wheels` "
                        "where pip reaches PyPI and bring .gpu/ to this checkout (its wheels bring the pure-Python "
                        "packages, and the check then names the compiled ones)")
    elif missing:
        by_dist = {m: manifest["modules"].get(m, m) for m in missing}
        shipped = sorted({d for d in by_dist.values() if d in manifest["wheels"]})
        compiled = sorted({d for d in by_dist.values() if d not in manifest["wheels"]})
        if shipped:
            problems.append(f"{', '.join(shipped)}: no wheel in {wheels}; run `make gpu-wheels` where pip reaches "
                            "PyPI and bring .gpu/ to this checkout")
        if compiled:
            problems.append(f"{', '.join(compiled)}: compiled packages, install them into {sys.executable} (pip "
                            "install; torchvision: the build that matches this torch)")
    if broken:
        problems.append(f"failing imports: {'; '.join(broken)}")
    return "cannot start: " + "; ".join(problems)


def ensure_modules(wheels: Path, site: Path, env: dict[str, str], smoke: bool) -> list[str]:
    """Make every module the steps import importable in their environment ``env`` (:func:`step_env` with ``site``),
    installing the wheels of what this Python lacks into ``site`` when an import fails; the wheels installed. A
    :class:`UserError` (one line) says what is still missing: the manifest's top-level modules are imported one by
    one first, so that every missing package is named at once (an entry module stops at its first)."""
    manifest = read_manifest(wheels)
    names = [*(sorted(manifest["modules"]) if manifest else []), *modules(smoke)]
    found = probe(names, env)
    if not (found["missing"] or found["broken"]):
        return []
    installed = install_wheels(wheels, site)
    found = probe(names, env) if installed else found
    if found["missing"] or found["broken"]:
        raise UserError(diagnosis(found, wheels))
    return installed


def compiler_problems() -> list[str]:
    """What Triton lacks here to build the launchers of the kernels it generates (torch.compile on CUDA, the
    optimizers' fused step): a C compiler (``$CC``, else gcc or clang, as Triton looks) and ``Python.h``."""
    problems = []
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
    if not compiler or not shutil.which(compiler):
        problems.append("no C compiler (gcc or clang on PATH, or $CC)")
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").exists():
        problems.append(f"no Python.h in {include} (the python{sys.version_info.major}.{sys.version_info.minor}-dev "
                        "package, or Python's own headers)")
    return problems


def check_compiler() -> None:
    problems = compiler_problems()
    if problems:
        raise UserError(f"cannot start: torch.compile and the optimizers' fused step need Triton to build kernel "
                        f"launchers here: {'; '.join(problems)}")


# ---------------------------------------------------------------------------------------------- make gpu-wheels
def brought_by_torch() -> set[str]:
    """The distributions installing torch brought here (its requirements, recursively, as installed; extras left
    out)."""
    seen, todo = set(), ["torch"]
    while todo:
        name = _normalized(todo.pop())
        if name in seen or not installed_here(name):  # not installed: a requirement of another platform or Python
            continue
        seen.add(name)
        for requirement in importlib.metadata.requires(name) or []:
            if "extra ==" not in requirement:
                todo.append(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))  # type: ignore[union-attr]
    return seen


def is_pure(distribution: str) -> bool:
    """Whether the installed ``distribution`` came from a pure-Python wheel (``Root-Is-Purelib: true``)."""
    wheel = importlib.metadata.distribution(distribution).read_text("WHEEL") or ""
    return "Root-Is-Purelib: true" in wheel


def needed_distributions() -> dict[str, str]:
    """``{top-level module: distribution}`` of what the steps import here (GPU modules included) that torch does
    not bring, tvlars itself left out."""
    found = probe(modules(smoke=False), step_env(CHECKOUT / ".gpu" / "none", CHECKOUT / ".gpu"))
    if found["missing"] or found["broken"]:
        raise UserError(f"this environment cannot import what the steps import ({diagnosis(found, Path('-'))}); "
                        "run `make install` first")
    owners = importlib.metadata.packages_distributions()
    torch_brings = brought_by_torch()
    return {module: owners[module][0] for module in found["loaded"] if module in owners
            and _normalized(owners[module][0]) not in torch_brings and owners[module][0] != "tvlars"}


def fetch_wheels(directory: Path, python_version: str) -> None:
    """Into ``directory`` (emptied of wheels first): a wheel of every pure-Python distribution of
    :func:`needed_distributions` at the version installed here (downloaded, or built from PyPI's source archive
    when PyPI has no wheel, as for antlr4 4.9.3), and ``manifest.json`` naming them, the compiled ones and the
    module of each."""
    needed = needed_distributions()
    versions = {dist: importlib.metadata.version(dist) for dist in set(needed.values())}
    pure = sorted(d for d in versions if is_pure(d))
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.whl"):
        old.unlink()
    pip = (sys.executable, "-m", "pip")
    for dist in pure:
        pin = f"{dist}=={versions[dist]}"
        download = (*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
                    python_version, "-d", str(directory), pin)
        if subprocess.run(download, capture_output=True).returncode == 0:
            continue
        build = (*pip, "wheel", "--quiet", "--no-deps", "-w", str(directory), pin)
        print(f"$ {shlex.join(build[2:])}  (PyPI has no wheel)", flush=True)
        if subprocess.run(build).returncode:
            raise UserError(f"cannot download or build {pin} (see above); is PyPI reachable?")
    files = sorted(directory.glob("*.whl"))
    impure = [f.name for f in files if not f.name.endswith("-none-any.whl")]
    if impure:
        raise UserError(f"{', '.join(impure)} in {directory} are not pure-Python wheels; remove them")
    compiled = sorted(set(versions) - set(pure))
    (directory / MANIFEST).write_text(json.dumps(
        {"python_version": python_version, "wheels": {d: versions[d] for d in pure},
         "compiled": {d: versions[d] for d in compiled}, "modules": needed}, indent=1, sort_keys=True) + "\n")
    size = sum(f.stat().st_size for f in files)
    print(f"{len(files)} wheels, {size / 1e6:.1f} MB in {directory}: {', '.join(f.name for f in files)}\n"
          f"compiled, which the node must have: {', '.join(f'{d} {versions[d]}' for d in compiled) or 'none'}")
