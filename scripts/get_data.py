"""`make data`: make sure the datasets a command needs are there, getting them where this machine allows.

    python scripts/get_data.py [DATASET ...] [--table NAME [--profile full|smoke]] [--root DIR] [--system-dir DIR]

With no dataset and no table: fashion_mnist (what `make test` needs). `--table` adds the datasets the experiment
spec's runs use (its smoke profile writes fake data and needs none). `--root` defaults to $TVLARS_DATA or `data`,
the training CLI's `data_root`.

- fashion_mnist: present (the Debian package's /usr/share/datasets/fashion-mnist, or <root>/FashionMNIST/raw) → say
  where; else, as root with apt-get: `apt-get install dataset-fashion-mnist` (after `apt-get update` if that
  fails); else torchvision's download into <root>/FashionMNIST/raw; else one `error:` line with the commands.
- a dataset whose loader can download (cifar10, cifar100): present under <root> → say so; else torchvision's
  download into <root>; else one `error:` line.
- any other (tinyimagenet, imagenet): present → say so; else its loader's `error:` line (how to get it).

Each present dataset is loaded once, so damaged files are reported (with their repair) here rather than mid-run.
Exit code 0 when every dataset is there, 2 otherwise.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _checkout  # noqa: F401 - this checkout's tvlars first

from tvlars.data import registered
from tvlars.data.fashion_mnist import DEBIAN_PACKAGE, SYSTEM_DIR, idx_paths, raw_dir
from tvlars.errors import UserError

DOWNLOAD_TIMEOUT_S = 60  # per network operation: without internet, fail instead of hanging
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz")


def _run(command: list[str]) -> int:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, check=False).returncode


def _download(name: str, root: Path, **loader_args: Any) -> None:
    registered(name).load(root=str(root), download=True, **loader_args)


@dataclass
class Machine:
    """What this script may do here; tests replace each part (no real apt or network in tests)."""

    is_root: bool = field(default_factory=lambda: hasattr(os, "geteuid") and os.geteuid() == 0)
    has_apt: bool = field(default_factory=lambda: shutil.which("apt-get") is not None)
    run: Callable[[list[str]], int] = _run  # a command's exit code
    download: Callable[..., None] = _download  # (name, root, **loader_args): the loader's download into root


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _fashion_mnist_dir(root: Path, system_dir: Path) -> Path | None:
    return next((d for d in (system_dir, raw_dir(root)) if idx_paths(d) is not None), None)


def get_fashion_mnist(root: Path, machine: Machine, system_dir: Path = Path(SYSTEM_DIR)) -> Path:
    """The directory holding the Fashion-MNIST IDX files, installed or downloaded first if needed."""
    found = _fashion_mnist_dir(root, system_dir)
    tried = []
    if found is None and machine.is_root and machine.has_apt:
        install = ["apt-get", "install", "-y", "-q", DEBIAN_PACKAGE]
        if machine.run(install) != 0 and machine.run(["apt-get", "update", "-q"]) == 0:
            machine.run(install)
        found = _fashion_mnist_dir(root, system_dir)
        tried.append(f"apt-get install {DEBIAN_PACKAGE} did not provide {system_dir}")
    elif found is None:
        tried.append("apt-get needs root" if machine.has_apt else "no apt-get")
    if found is None:
        try:
            machine.download("fashion_mnist", root, system_dir=str(system_dir))
        except Exception as exc:  # noqa: BLE001 - any download failure (no network, HTTP, disk) ends the same way
            tried.append(f"the download failed ({_one_line(exc)})")
        found = _fashion_mnist_dir(root, system_dir)
    if found is None:
        raise UserError(
            f"Fashion-MNIST is neither in {system_dir} nor in {raw_dir(root)} and could not be fetched "
            f"({'; '.join(tried)}); run `sudo apt-get update && sudo apt-get install -y {DEBIAN_PACKAGE}`, or copy "
            f"{', '.join(FASHION_MNIST_FILES)} (https://github.com/zalandoresearch/fashion-mnist) into "
            f"{raw_dir(root)}"
        )
    registered("fashion_mnist").load(root=str(root), system_dir=str(system_dir))  # damaged files fail here
    return found


def get_dataset(name: str, root: Path, machine: Machine, system_dir: Path = Path(SYSTEM_DIR)) -> str:
    """Make dataset ``name`` available under ``root`` (Fashion-MNIST: or in ``system_dir``); returns where it is
    (UserError if it cannot be)."""
    if name == "fashion_mnist":
        return str(get_fashion_mnist(root, machine, system_dir))
    load = registered(name).load
    try:
        load(root=str(root))
        return f"under {root}"
    except UserError:
        if "download" not in inspect.signature(load).parameters:
            raise
    print(f"{name}: not found (or damaged) under {root}; downloading it with torchvision", flush=True)
    try:
        machine.download(name, root)
    except Exception as exc:  # noqa: BLE001 - any download failure (no network, HTTP, disk) ends the same way
        raise UserError(f"{name} could not be downloaded into {root} ({_one_line(exc)}); on a machine with "
                        f"internet run `python scripts/get_data.py {name} --root {root}` and copy {root} here, "
                        f"or point TVLARS_DATA at a copy") from None
    load(root=str(root))
    return f"under {root} (downloaded)"


def table_datasets(table: str) -> list[str]:
    """The registered names of the datasets an experiment spec's runs use: one composition per distinct set of
    config-group choices (only those can change the dataset)."""
    from hydra import compose, initialize_config_dir

    from tvlars.paths import CONFIG_DIR
    from tvlars.tables.spec import load_spec

    groups = {path.name for path in Path(CONFIG_DIR).iterdir() if path.is_dir()}
    choices = {tuple(o for o in job.overrides if o.split("=")[0].lstrip("+~") in groups)
               for job in load_spec(table).jobs()}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        targets = {compose(config_name="config", overrides=list(c)).dataset._target_ for c in choices}
    return sorted(registered(target).name for target in targets)


def main(argv: list[str] | None = None, machine: Machine | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", help="registered dataset names (default: fashion_mnist)")
    parser.add_argument("--table", help="also the datasets of this experiment spec (experiments/<table>.yaml)")
    parser.add_argument("--profile", choices=("full", "smoke"), default="full",
                        help="with --table: smoke runs on fake data and needs nothing")
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("TVLARS_DATA") or "data"),
                        help="data_root of the runs (default: $TVLARS_DATA or data)")
    parser.add_argument("--system-dir", type=Path, default=Path(SYSTEM_DIR),
                        help=f"Fashion-MNIST's system copy, the runs' dataset.system_dir (default: {SYSTEM_DIR})")
    args = parser.parse_args(argv)
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    machine = machine or Machine()
    try:
        names = list(args.datasets)
        if args.table and args.profile == "full":
            names += table_datasets(args.table)
        elif args.table:
            print(f"table {args.table}, smoke profile: it writes its own fake data; nothing to get")
        if not names and not args.table:
            names = ["fashion_mnist"]
        for name in dict.fromkeys(names):
            print(f"{name}: present {get_dataset(name, args.root, machine, args.system_dir)}", flush=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
