"""Learning-rate schedules: pure functions of the global step (plus saved state)."""

from tvlars.schedules.autowu import AutoWU
from tvlars.schedules.base import Constant, Schedule
from tvlars.schedules.phi import Phi
from tvlars.schedules.warmup_cosine import WarmupCosine

__all__ = ["AutoWU", "Constant", "Phi", "Schedule", "WarmupCosine"]
