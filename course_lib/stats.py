"""Intervals for results that vary from run to run (seeds, folds), and the verdict they allow.

A single training run is one draw: a different seed (initialisation, batch
order) gives a different accuracy. Comparing two methods therefore needs
several runs and an interval, and when both methods are run with the same
seeds the comparison is *paired*: the per-seed differences cancel what the
seed does to both, and their interval is usually much narrower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided Student-t confidence interval over ``n`` runs."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def verdict(self, zero: float = 0.0) -> str:
        """'higher' / 'lower' when the whole interval lies above / below ``zero``, else 'inconclusive'."""
        if self.low > zero:
            return "higher"
        if self.high < zero:
            return "lower"
        return "inconclusive"

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}] ({self.confidence:.0%} t-interval, n={self.n})"


def _as_values(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) < 2:
        raise ValueError(f"{name} needs at least 2 values in a flat sequence (one per run), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values: {array.tolist()}")
    return array


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of ``values`` (one per run) ± Student-t quantile · standard error.

    With few runs (3-5) the t quantile is much larger than 1.96 (4.30 for
    n = 3): small samples earn wide intervals, as they should.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    array = _as_values(values, "t_interval")
    from scipy import stats

    mean = float(array.mean())
    standard_error = float(array.std(ddof=1)) / math.sqrt(len(array))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=len(array) - 1)) * standard_error
    return Interval(mean=mean, low=mean - half, high=mean + half, n=len(array), confidence=confidence)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """t-interval of the per-run differences ``a[i] - b[i]`` (runs paired by seed / fold)."""
    first, second = _as_values(a, "paired_difference (a)"), _as_values(b, "paired_difference (b)")
    if first.shape != second.shape:
        raise ValueError(f"paired runs need as many values in a as in b, got {len(first)} and {len(second)}")
    return t_interval(first - second, confidence)
