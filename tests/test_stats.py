"""Uncertainty helpers against independent references (scipy / statsmodels formulas) and hand-computed cases."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from course_lib import stats


def test_wilson_interval_matches_scipy():
    for correct, total in [(432, 450), (0, 20), (20, 20), (7, 9)]:
        ours = stats.wilson_interval(correct, total)
        reference = scipy_stats.binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
        assert ours.low == pytest.approx(reference.low, abs=1e-9)
        assert ours.high == pytest.approx(reference.high, abs=1e-9)
        assert ours.estimate == correct / total
    # the course's own case: 0.96 on 450 images is about ±1.8 points, not a point estimate
    interval = stats.wilson_interval(432, 450)
    assert 0.015 < interval.estimate - interval.low < 0.025


def test_wilson_interval_rejects_bad_counts():
    with pytest.raises(ValueError, match="total"):
        stats.wilson_interval(1, 0)
    with pytest.raises(ValueError, match="correct"):
        stats.wilson_interval(5, 4)


def test_top1_interval_from_logits():
    logits = np.eye(10)[[0, 1, 2, 3]]
    interval = stats.top1_interval(logits, np.array([0, 1, 2, 9]))
    assert interval.estimate == 0.75
    with pytest.raises(ValueError, match="logits"):
        stats.top1_interval(logits, np.array([0, 1]))


def test_mcnemar_exact_matches_binomial_test():
    a = np.array([1] * 50 + [1] * 8 + [0] * 2 + [0] * 10, dtype=bool)
    b = np.array([1] * 50 + [0] * 8 + [1] * 2 + [0] * 10, dtype=bool)
    result = stats.mcnemar_exact(a, b)
    assert (result.only_a, result.only_b) == (8, 2)
    assert result.p_value == pytest.approx(scipy_stats.binomtest(2, 10, 0.5).pvalue)
    assert stats.mcnemar_exact(a, a).p_value == 1.0


def test_paired_bootstrap_is_narrower_than_unpaired_when_errors_coincide():
    rng = np.random.default_rng(0)
    hard = rng.random(450) < 0.05  # the same hard images fool both models
    a = ~hard
    b = ~hard & (rng.random(450) > 0.01)
    diff = stats.paired_bootstrap_difference(a, b)
    assert diff.low <= diff.estimate <= diff.high
    assert diff.estimate == pytest.approx(a.mean() - b.mean())
    unpaired_half_width = 1.96 * np.sqrt(a.mean() * (1 - a.mean()) / 450 + b.mean() * (1 - b.mean()) / 450)
    assert diff.high - diff.low < unpaired_half_width  # pairing removes the shared difficulty
    identical = stats.paired_bootstrap_difference(a, a)
    assert (identical.low, identical.estimate, identical.high) == (0.0, 0.0, 0.0)


def test_ratio_interval_paired_by_round():
    slow = [1.0, 1.2, 0.9, 1.5, 1.1, 1.0, 1.3]  # a loaded machine slows both in the same rounds
    fast = [x / 2 for x in slow]
    exact = stats.bootstrap_median_ratio(slow, fast)
    assert exact.estimate == pytest.approx(2.0) and exact.low == pytest.approx(2.0) and exact.high == pytest.approx(2.0)
    noisy = stats.bootstrap_median_ratio(slow, [0.5, 0.7, 0.4, 0.8, 0.5, 0.55, 0.6])
    assert noisy.low < noisy.estimate < noisy.high
    with pytest.raises(ValueError, match="at least 2"):
        stats.bootstrap_median_ratio([1.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        stats.bootstrap_median_ratio([1.0, 0.0], [1.0, 1.0])


def test_verdict_met_not_met_inconclusive():
    assert stats.verdict(stats.Interval(1.7, 1.6, 1.8), 1.5) == stats.MET
    assert stats.verdict(stats.Interval(1.3, 1.2, 1.4), 1.5) == stats.NOT_MET
    assert stats.verdict(stats.Interval(1.5, 1.44, 1.56), 1.5) == stats.INCONCLUSIVE
    # lower is better (e.g. a top-1 drop at most 1 point)
    assert stats.verdict(stats.Interval(0.0, -0.01, 0.005), 0.01, higher_is_better=False) == stats.MET
    assert stats.verdict(stats.Interval(0.02, 0.015, 0.03), 0.01, higher_is_better=False) == stats.NOT_MET
    assert stats.verdict(stats.Interval(0.01, -0.01, 0.03), 0.01, higher_is_better=False) == stats.INCONCLUSIVE
