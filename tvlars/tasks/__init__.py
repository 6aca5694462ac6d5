"""Tasks: what one training step and one evaluation compute."""

from tvlars.tasks.base import Sums, Task
from tvlars.tasks.classification import Classification

__all__ = ["Classification", "Sums", "Task"]
