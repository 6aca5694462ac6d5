"""`make gpu-check`: does this GPU node run tvlars? The command line of :mod:`tvlars.gpu_check` (see there and
docs/gpu.md), run with this checkout's tvlars first."""

import sys

import _checkout  # noqa: F401 - this checkout's tvlars first

from tvlars.gpu_check.cli import main

if __name__ == "__main__":
    sys.exit(main())
