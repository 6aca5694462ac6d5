"""Optimizers (one per file) and the paper's parameter groups.

``LARS``, ``TVLARS``, ``LAMB`` and ``LAMBC`` share one trust-ratio core (:mod:`tvlars.optim._trust`),
run eagerly or compiled (``fused=``), and expose the per-tensor observables of their last step through
``trust_stats()``. ``CDAT`` wraps the direction of SGD, LARS or LAMB with a curvature-aware step size.
Rules, sources, presets and costs: ``docs/optimizers.md``.
"""

from tvlars.optim.cdat import CDAT
from tvlars.optim.groups import param_groups
from tvlars.optim.lamb import LAMB
from tvlars.optim.lambc import LAMBC
from tvlars.optim.lars import LARS
from tvlars.optim.tvlars import TVLARS

__all__ = ["CDAT", "LAMB", "LAMBC", "LARS", "TVLARS", "param_groups"]
