"""Statistics for success rates: Wilson intervals and exact two-sample tests.

Robot-learning evaluations have few episodes per condition (10-50), where the normal
approximation interval is badly wrong near 0% and 100%. The Wilson score interval stays
inside [0, 1] and has close to nominal coverage at these sizes; Fisher's exact test compares
two policies' success counts without a large-sample assumption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import fisher_exact, norm


@dataclass(frozen=True)
class Rate:
    """``successes`` out of ``trials`` with its Wilson interval."""

    successes: int
    trials: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")

    def __str__(self) -> str:
        if not self.trials:
            return "n/a"
        return f"{100 * self.rate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] (n={self.trials})"


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(nan, nan)`` when ``trials == 0``."""
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return (float("nan"), float("nan"))
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    # Clamp rounding noise so that 0/n starts exactly at 0 and n/n ends exactly at 1.
    return (max(0.0, centre - half) if successes else 0.0, min(1.0, centre + half) if successes < trials else 1.0)


def rate(successes: int, trials: int, confidence: float = 0.95) -> Rate:
    low, high = wilson_interval(successes, trials, confidence)
    return Rate(successes, trials, low, high)


def exact_test(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> float:
    """Two-sided Fisher exact test p-value for 'the two success rates are equal'."""
    if trials_a == 0 or trials_b == 0:
        return float("nan")
    table = [[successes_a, trials_a - successes_a], [successes_b, trials_b - successes_b]]
    return float(fisher_exact(table, alternative="two-sided").pvalue)
