"""Small statistics the canary analysis and the SLO monitor share: quantiles from histogram buckets,
population stability index, and the two-proportion test with Lehr's sample-size rule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from freshrec.pipeline.monitoring.promtext import Histogram

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
# Empty buckets would make PSI infinite; this floor is the usual smoothing (a share of 1e-4).
_PSI_FLOOR = 1e-4


def histogram_quantile(q: float, hist: Histogram) -> float | None:
    """Quantile q of a cumulative histogram, interpolated linearly inside the bucket like PromQL's
    histogram_quantile(); the lowest bucket starts at 0 and a quantile in +Inf returns the highest
    finite bound. None when the histogram is empty."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    total = hist.count
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in zip(hist.bounds, hist.cumulative):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower_bound
            in_bucket = cumulative - lower_count
            if in_bucket <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = bound, cumulative
    return lower_bound


def shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("cannot take shares of an empty distribution")
    return [c / total for c in counts]


def psi(expected_counts: Sequence[float], actual_counts: Sequence[float]) -> float:
    """Population stability index of `actual` against `expected` over the same bins."""
    if len(expected_counts) != len(actual_counts):
        raise ValueError("PSI needs the same bins on both sides")
    expected = [max(s, _PSI_FLOOR) for s in shares(expected_counts)]
    actual = [max(s, _PSI_FLOOR) for s in shares(actual_counts)]
    return float(sum((a - e) * math.log(a / e) for e, a in zip(expected, actual)))


def psi_level(value: float) -> str:
    """none < 0.1 <= moderate <= 0.25 < significant."""
    if value < PSI_MODERATE:
        return "none"
    return "moderate" if value <= PSI_SIGNIFICANT else "significant"


def required_per_arm(p: float, delta: float) -> float:
    """Lehr's rule: impressions per arm to detect an absolute change `delta` at ~80% power, alpha 0.05."""
    if delta <= 0:
        raise ValueError("delta must be positive")
    return 16.0 * p * (1.0 - p) / (delta * delta)


@dataclass(frozen=True)
class ProportionTest:
    p_control: float
    p_treatment: float
    z: float
    p_value: float  # two-sided


def two_proportion_test(success_control: float, n_control: float, success_treatment: float,
                        n_treatment: float) -> ProportionTest:
    """Pooled two-proportion z-test (treatment vs control)."""
    if n_control <= 0 or n_treatment <= 0:
        raise ValueError("both arms need at least one trial")
    p1, p2 = success_control / n_control, success_treatment / n_treatment
    pooled = (success_control + success_treatment) / (n_control + n_treatment)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    if se == 0:
        return ProportionTest(p1, p2, 0.0, 1.0)
    z = (p2 - p1) / se
    return ProportionTest(p1, p2, z, math.erfc(abs(z) / math.sqrt(2)))
