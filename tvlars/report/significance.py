"""The tables' tests: Welch's t-test of two cells' per-seed values, the equivalence test (TOST) made of two one-sided
Welch tests, and the Holm–Bonferroni adjustment of a family of tests.

Every verdict reads a Holm-adjusted p-value (:func:`adjust`): a table's bold tests are one family, its claim
section's tests another. A test that is never adjusted is a family of one (its adjusted p is its p).
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

ALPHA = 0.05  # significance level of every test in the tables


def p_text(p: float) -> str:
    """``p = 0.069``, or ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


@dataclass
class Difference:
    """``a − b`` in points with its Welch 95 % confidence interval, two-sided p-value and Holm-adjusted p-value."""

    diff: float
    low: float
    high: float
    p: float
    holm: float  # p adjusted within the test's family (:func:`adjust`)

    @property
    def significant(self) -> bool:
        return self.holm < ALPHA

    def text(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (f"{self.diff:+.2f} points (95 % CI {self.low:+.2f} to {self.high:+.2f}, {p_text(self.p)}, "
                f"Holm {p_text(self.holm)}: {verdict})")


@dataclass
class Equivalence:
    """The equivalence test (TOST) of ``|a − b| < margin``: two one-sided Welch tests at :data:`ALPHA`, whose larger
    p-value is ``p``; ``p < ALPHA`` exactly when the (1 − 2α) = 90 % interval of ``a − b`` lies inside ± margin."""

    margin: float
    low: float  # 90 % interval of a − b
    high: float
    p: float
    holm: float  # p adjusted within the test's family (:func:`adjust`)

    @property
    def equivalent(self) -> bool:
        return self.holm < ALPHA

    def text(self) -> str:
        verdict = f"equivalent within ±{self.margin:g} points" if self.equivalent else "not shown equivalent"
        return (f"equivalence within ±{self.margin:g} points (TOST, 90 % CI {self.low:+.2f} to {self.high:+.2f}, "
                f"{p_text(self.p)}, Holm {p_text(self.holm)}): {verdict}")


def _welch(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> Any:
    """scipy's Welch t-test result (its ``pvalue`` and ``confidence_interval``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-identical values: scipy warns, the result stands
        return stats.ttest_ind(a, b, equal_var=False, alternative=alternative)


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[Difference | None, str]:
    """Welch's t-test of the per-seed values ``a`` against ``b``: the difference, or ``None`` and why no test is
    possible (one seed, or no spread in either).

    t = (x̄_a − x̄_b) / sqrt(s_a²/n_a + s_b²/n_b), with Welch–Satterthwaite degrees of freedom
    (``scipy.stats.ttest_ind(equal_var=False)``, two-sided).
    """
    if min(len(a), len(b)) < 2:
        return None, "one seed: no estimate of seed noise"
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return None, "no spread over seeds in either cell"
    result = _welch(a, b)
    interval = result.confidence_interval(1 - ALPHA)
    p = float(result.pvalue)
    return Difference(statistics.fmean(a) - statistics.fmean(b), float(interval.low), float(interval.high), p, p), ""


def tost(a: Sequence[float], b: Sequence[float], margin: float) -> Equivalence:
    """The equivalence test of ``a`` and ``b`` within ± ``margin`` points: H0 ``a − b ≤ −margin`` (Welch, one-sided,
    ``a + margin`` against ``b``) and H0 ``a − b ≥ margin`` (``a − margin`` against ``b``); both must be rejected.
    Call it where :func:`welch` makes a test."""
    above = _welch(np.add(a, margin), b, "greater")
    below = _welch(np.subtract(a, margin), b, "less")
    interval = _welch(a, b).confidence_interval(1 - 2 * ALPHA)
    p = max(float(above.pvalue), float(below.pvalue))
    return Equivalence(margin, float(interval.low), float(interval.high), p, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the order given (Holm 1979, "A Simple Sequentially Rejective
    Multiple Test Procedure"): the i-th smallest of m p-values is multiplied by m − i + 1, a running maximum keeps the
    order, and 1 caps them. Rejecting where the adjusted p < α keeps the chance of any false rejection in the family
    at most α. Written here: scipy has no Holm adjustment and statsmodels (``multipletests``) is not a dependency."""
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def adjust(family: Sequence[Difference | Equivalence]) -> None:
    """Set every test's ``holm`` to its p-value adjusted over ``family`` (:func:`holm`)."""
    for test, adjusted in zip(family, holm([t.p for t in family]), strict=True):
        test.holm = adjusted
