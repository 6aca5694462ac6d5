"""Imported first by the scripts in this folder: puts this checkout's root first on ``sys.path``, so a script uses
the ``tvlars`` beside it, whatever other copy is installed (``python -m tvlars.<command>`` does the same by
running from the checkout's root)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))
