"""Measurements beside training for the large-batch question: steps to target (:mod:`.target`), the gradient
noise scale (:mod:`.noise_scale`) and the sharpness (:mod:`.sharpness`); :class:`Instruments` runs them at the
engine's hooks. Documentation: ``docs/instruments.md``."""

from tvlars.instruments.noise_scale import NoiseScale
from tvlars.instruments.sharpness import Sharpness, stability_threshold
from tvlars.instruments.suite import Instruments
from tvlars.instruments.target import StepsToTarget, Target, target_summary

__all__ = ["Instruments", "NoiseScale", "Sharpness", "StepsToTarget", "Target", "stability_threshold",
           "target_summary"]
