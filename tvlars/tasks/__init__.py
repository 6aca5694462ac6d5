"""Tasks: what one training step and one evaluation compute."""

from tvlars.tasks.base import Sums, Task
from tvlars.tasks.classification import Classification
from tvlars.tasks.linear_eval import LinearEval
from tvlars.tasks.ssl import BarlowTwins, SimCLR

__all__ = ["BarlowTwins", "Classification", "LinearEval", "SimCLR", "Sums", "Task"]
