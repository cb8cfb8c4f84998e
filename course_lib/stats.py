"""Uncertainty of the course's measurements: accuracy intervals, paired comparisons, ratio intervals, verdicts.

A top-1 of 0.96 on 450 images has a standard error of about 0.9 points, and a
latency ratio moves from round to round on a shared machine. A conclusion
drawn from one number without its interval is drawn from noise as often as
not, so every comparison in the course goes through these helpers:

* :func:`wilson_interval` — a confidence interval for one proportion (top-1);
* :func:`paired_bootstrap_difference` and :func:`mcnemar_exact` — two models
  scored on the *same* images (pairing removes the images' own difficulty);
* :func:`ratio_interval` — the latency ratio of two variants timed in
  interleaved rounds, paired by round;
* :func:`verdict` — "met", "not met" or "inconclusive" for a threshold;
* :func:`t_interval` and :func:`paired_difference` — results that vary from run
  to run (seeds, folds): a Student-t interval over runs, and the interval of
  per-run differences when both methods ran with the same seeds (pairing
  cancels what the seed does to both, so it is usually much narrower).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Verdicts on a budget line.
MET, NOT_MET, INCONCLUSIVE = "met", "not met", "inconclusive"


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval (``level``, e.g. 0.95); ``n`` runs for a t-interval."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    n: int | None = None

    @property
    def mean(self) -> float:
        """The estimate of a t-interval: the mean over runs."""
        return self.estimate

    @property
    def confidence(self) -> float:
        return self.level

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def verdict(self, zero: float = 0.0) -> str:
        """'higher' / 'lower' when the whole interval lies above / below ``zero``, else 'inconclusive'."""
        if self.low > zero:
            return "higher"
        if self.high < zero:
            return "lower"
        return INCONCLUSIVE

    def __str__(self) -> str:
        if self.n is not None:
            return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}] ({self.level:.0%} t-interval, n={self.n})"
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(correct: int, total: int, level: float = 0.95) -> Interval:
    """Wilson score interval for a proportion, e.g. top-1 = ``correct / total``.

    Better than "± 1.96 standard errors" near 0 or 1 (it never leaves [0, 1]
    and does not collapse to a point at 100 %).
    """
    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 1:
        raise ValueError(f"total must be a positive integer, got {total!r}")
    if isinstance(correct, bool) or not isinstance(correct, (int, np.integer)) or not 0 <= correct <= total:
        raise ValueError(f"correct must be an integer between 0 and total={total}, got {correct!r}")
    z = _z(level)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level)


def top1_interval(logits: Any, labels: Any, level: float = 0.95) -> Interval:
    """Top-1 of ``logits`` against ``labels`` with its Wilson interval."""
    hits = _hits(logits, labels)
    return wilson_interval(int(hits.sum()), len(hits), level)


def _hits(logits: Any, labels: Any) -> np.ndarray:
    scores, target = np.asarray(logits), np.asarray(labels)
    if scores.ndim != 2 or target.shape != (scores.shape[0],) or scores.shape[0] == 0:
        raise ValueError(f"need logits N × classes and N labels (N ≥ 1), got {scores.shape} and {target.shape}")
    return scores.argmax(1) == target


def _bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def paired_bootstrap_difference(
    correct_a: Any, correct_b: Any, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Interval:
    """Interval of top-1(a) − top-1(b) when both were scored on the same images (percentile bootstrap).

    ``correct_a`` / ``correct_b`` are per-image booleans (``logits.argmax(1) == y``).
    Resampling *images* (not the two models separately) keeps the pairing:
    two models that fail on the same hard images differ less than their two
    independent intervals suggest.
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal-length 1-D arrays of per-image hits, got {a.shape} and {b.shape}")
    diff = a.astype(np.int8) - b.astype(np.int8)
    means = diff[_bootstrap_indices(len(diff), resamples, seed)].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(diff.mean()), float(low), float(high), level)


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test: images only ``a`` got right, only ``b`` got right, and the two-sided p-value."""

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(correct_a: Any, correct_b: Any) -> McNemar:
    """Exact (binomial) McNemar test of "a and b are equally accurate" on the same images.

    Only the images where the two disagree carry information; under the null
    hypothesis each of them is a fair coin flip.
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two equal-length 1-D arrays of per-image hits, got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return McNemar(0, 0, 1.0)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return McNemar(only_a, only_b, min(1.0, 2 * tail))


def bootstrap_median_ratio(
    numerator: Sequence[float], denominator: Sequence[float], level: float = 0.95, resamples: int = 5_000, seed: int = 0
) -> Interval:
    """Interval of ``numerator / denominator`` from per-round values paired by round (percentile bootstrap).

    ``numerator[i]`` and ``denominator[i]`` were timed in the same
    interleaved round, so their ratio cancels what that round's machine
    load did to both. The estimate is the median of the per-round ratios;
    the interval resamples rounds. With few rounds (5–10) the interval is
    coarse but honest: it cannot be narrower than the rounds' spread allows.
    """
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"need two equal-length lists of at least 2 per-round values, got {a.shape} and {b.shape}")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("per-round values must be positive (latencies)")
    ratios = a / b
    medians = np.median(ratios[_bootstrap_indices(len(ratios), resamples, seed)], axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return Interval(float(np.median(ratios)), float(low), float(high), level)


def verdict(interval: Interval, threshold: float, higher_is_better: bool = True) -> str:
    """"met", "not met" or "inconclusive": is the whole interval on the right side of ``threshold``?

    A line is met when even the interval's worst end meets it, not met when
    even its best end misses it; otherwise the measurement cannot tell, and
    saying "met" or "not met" would be a coin flip that re-running flips.
    """
    if interval.low > interval.high:
        raise ValueError(f"interval low {interval.low} is above high {interval.high}")
    worst, best = (interval.low, interval.high) if higher_is_better else (interval.high, interval.low)
    passes = (lambda v: v >= threshold) if higher_is_better else (lambda v: v <= threshold)
    if passes(worst):
        return MET
    if not passes(best):
        return NOT_MET
    return INCONCLUSIVE


# --- runs: seeds and folds -----------------------------------------------------------------------


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
    from scipy import stats as scipy_stats

    mean = float(array.mean())
    standard_error = float(array.std(ddof=1)) / math.sqrt(len(array))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=len(array) - 1)) * standard_error
    return Interval(mean, mean - half, mean + half, confidence, n=len(array))


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """t-interval of the per-run differences ``a[i] - b[i]`` (runs paired by seed / fold)."""
    first, second = _as_values(a, "paired_difference (a)"), _as_values(b, "paired_difference (b)")
    if first.shape != second.shape:
        raise ValueError(f"paired runs need as many values in a as in b, got {len(first)} and {len(second)}")
    return t_interval(first - second, confidence)
