"""Bootstrap intervals of a ratio of medians, and the verdict the bench draws from them."""

from __future__ import annotations

import numpy as np
import pytest

from lowering.resample import median_ratio_interval, verdict


def test_times_without_spread_give_a_point_interval():
    assert median_ratio_interval([3.0] * 5, [1.5] * 7) == pytest.approx((2.0, 2.0))


def test_each_median_is_resampled_on_its_own():
    """The two variants are timed in different calls, not in pairs: resampling one side alone widens
    the interval even where the two samples are exact multiples of each other."""
    reference = [1.0, 1.5, 2.0, 2.5, 3.0]
    low, high = median_ratio_interval([2 * t for t in reference], reference)
    assert low < 2.0 < high


def test_the_interval_covers_a_true_ratio_of_one_about_as_often_as_it_claims():
    """Two samples of one distribution: the 95% interval should hold 1.00 in about 95% of trials
    (the percentile bootstrap of a median is a little loose or tight on small samples)."""
    rng = np.random.default_rng(1)
    trials = 200
    covered = 0
    for trial in range(trials):
        a, b = rng.lognormal(0.0, 0.1, size=(2, 60))
        low, high = median_ratio_interval(list(a), list(b), seed=trial)
        assert low <= np.median(a) / np.median(b) <= high
        covered += low <= 1.0 <= high
    assert 0.88 <= covered / trials <= 0.995


def test_a_clear_difference_is_told_apart_and_a_small_one_on_few_samples_is_not():
    rng = np.random.default_rng(2)
    reference = rng.lognormal(0.0, 0.05, size=100)
    slower = 1.2 * rng.lognormal(0.0, 0.05, size=100)
    low, _ = median_ratio_interval(list(slower), list(reference))
    assert low > 1.1
    assert verdict(float(np.median(slower) / np.median(reference)), (low, 1.3)) == "slower"
    close = 1.02 * rng.lognormal(0.0, 0.1, size=6)
    interval = median_ratio_interval(list(close), list(reference[:6]))
    assert interval[0] < 1.0 < interval[1]


@pytest.mark.parametrize(
    ("ratio", "interval", "expected"),
    [(0.97, (0.93, 1.01), "met"), (1.00, None, "met"), (1.03, (0.99, 1.07), "tie"), (1.06, (1.04, 1.08), "slower")],
)
def test_verdict(ratio, interval, expected):
    assert verdict(ratio, interval) == expected


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="at least one sample"):
        median_ratio_interval([], [1.0])
    with pytest.raises(ValueError, match=r"confidence must lie strictly between 0 and 1, got 1\.5"):
        median_ratio_interval([1.0], [1.0], confidence=1.5)
