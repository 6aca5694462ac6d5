"""Git, asked about a checkout: one command's output or ``None`` (no git, not a work tree, an error, a timeout).

Standard library only: ``setup.py`` loads this file by its path in a build environment that has none of tvlars'
dependencies, as ``tvlars.provenance`` and the GPU check's report import it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(*args: str, cwd: Path | str | None = None) -> str | None:
    """The output of ``git <args>`` run in ``cwd`` (decoded, undecodable bytes replaced), or ``None`` when it fails."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode(errors="replace")
