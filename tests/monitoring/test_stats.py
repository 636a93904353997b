"""Quantiles, PSI and the two-proportion test against hand-computed values."""

from __future__ import annotations

import math

import pytest

from freshrec.pipeline.monitoring.promtext import Histogram
from freshrec.pipeline.monitoring.stats import (
    histogram_quantile,
    psi,
    psi_level,
    required_per_arm,
    two_proportion_test,
)

INF = math.inf


def test_histogram_quantile_interpolates_inside_the_bucket():
    hist = Histogram([0.001, 0.005, 0.01, INF], [10, 60, 100, 100])
    # rank 50 falls in (0.001, 0.005]: 40 of its 50 observations -> 0.001 + 0.004 * 40/50
    assert histogram_quantile(0.5, hist) == pytest.approx(0.0042)
    # rank 99 falls in (0.005, 0.01]: 39 of 40 -> 0.005 + 0.005 * 39/40
    assert histogram_quantile(0.99, hist) == pytest.approx(0.009875)


def test_histogram_quantile_in_the_inf_bucket_returns_the_highest_finite_bound():
    hist = Histogram([0.001, 0.01, INF], [0, 10, 100])
    assert histogram_quantile(0.99, hist) == pytest.approx(0.01)


def test_histogram_quantile_of_an_empty_histogram_is_none():
    assert histogram_quantile(0.99, Histogram([0.01, INF], [0, 0])) is None
    with pytest.raises(ValueError):
        histogram_quantile(1.5, Histogram([0.01, INF], [1, 1]))


def test_psi_hand_computed_and_levels():
    # (0.9-0.5) ln(0.9/0.5) + (0.1-0.5) ln(0.1/0.5)
    expected = 0.4 * math.log(1.8) + (-0.4) * math.log(0.2)
    assert psi([50, 50], [90, 10]) == pytest.approx(expected)
    assert psi([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0)
    assert psi_level(0.05) == "none"
    assert psi_level(0.1) == "moderate"
    assert psi_level(0.25) == "moderate"
    assert psi_level(0.26) == "significant"
    # An empty bin is floored, so the index stays finite.
    assert math.isfinite(psi([10, 0], [5, 5]))
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])


def test_lehr_sample_size():
    assert required_per_arm(0.1, 0.02) == pytest.approx(16 * 0.09 / 0.0004)  # 3600


def test_two_proportion_test_hand_computed():
    result = two_proportion_test(100, 1000, 150, 1000)
    pooled = 250 / 2000
    se = math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert result.z == pytest.approx(0.05 / se)
    assert result.z == pytest.approx(3.3806, abs=1e-3)
    assert result.p_value == pytest.approx(math.erfc(result.z / math.sqrt(2)))
    assert result.p_value < 0.001
    same = two_proportion_test(100, 1000, 100, 1000)
    assert same.z == 0 and same.p_value == pytest.approx(1.0)
