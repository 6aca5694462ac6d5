"""Where the Hydra config tree and the experiment specs are: the one place every command looks them up.

A checkout keeps them at its top, beside the package (``configs/``, ``experiments/``): run from its root (``python
-m``), on ``PYTHONPATH`` or installed editable (``pip install -e .``, which ``make`` uses), tvlars reads them there,
so a spec added to ``experiments/`` runs with ``make reproduce-table TABLE=<name>``. A wheel ships them inside the
package (``tvlars/configs``, ``tvlars/experiments``: ``setup.py``'s ``package_dir`` maps them there), and an
installed copy reads them from itself, whatever directory it runs in. There is one copy of each in the repository.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """The tree ``name`` (``configs`` or ``experiments``): inside the package where a wheel put it, else beside the
    package at the top of the checkout."""
    installed = PACKAGE_DIR / name
    return installed if installed.is_dir() else PACKAGE_DIR.parent / name


CONFIG_DIR = str(shipped("configs"))
"""The Hydra config tree (``config.yaml`` and one directory per group), as Hydra's ``config_dir`` takes it."""
EXPERIMENTS_DIR = shipped("experiments")
"""The experiment specs, one ``<table>.yaml`` per table."""
