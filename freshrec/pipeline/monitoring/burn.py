"""SRE-workbook multiwindow, multi-burn-rate alerts over recorded counter snapshots.

burn rate = error ratio over a window / (1 - SLO target). An alert fires when both its long and its
short window burn faster than its factor (the short window makes it reset quickly once fixed):
page 14.4x over 1h and 5m, page 6x over 6h and 30m, ticket 1x over 3d and 6h. For the latency SLO a
request slower than the threshold is an error.

Counters are cumulative per replica; the increase over a window is the sum of reset-aware deltas
between consecutive snapshots of each replica (a drop means the process restarted), starting at the
last snapshot at or before the window start, as PromQL's increase() without extrapolation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    OK = "ok"
    TICKET = "ticket"
    PAGE = "page"


@dataclass(frozen=True)
class CounterPoint:
    """Cumulative counters of one series (a replica, possibly one variant) at one instant."""

    at: dt.datetime
    requests: float
    errors: float
    slow: float


@dataclass(frozen=True)
class BurnRule:
    severity: Severity
    long_window: dt.timedelta
    short_window: dt.timedelta
    factor: float


SRE_RULES: tuple[BurnRule, ...] = (
    BurnRule(Severity.PAGE, dt.timedelta(hours=1), dt.timedelta(minutes=5), 14.4),
    BurnRule(Severity.PAGE, dt.timedelta(hours=6), dt.timedelta(minutes=30), 6.0),
    BurnRule(Severity.TICKET, dt.timedelta(days=3), dt.timedelta(hours=6), 1.0),
)


@dataclass(frozen=True)
class WindowIncrease:
    requests: float
    errors: float
    slow: float
    covered: dt.timedelta  # how much of the window the snapshots actually span


def _delta(before: float, after: float) -> float:
    return after - before if after >= before else after


def series_increase(points: Sequence[CounterPoint], start: dt.datetime, end: dt.datetime) -> WindowIncrease:
    """Increase of one series' counters over [start, end]."""
    ordered = sorted((p for p in points if p.at <= end), key=lambda p: p.at)
    if not ordered:
        return WindowIncrease(0.0, 0.0, 0.0, dt.timedelta(0))
    before_start = [i for i, p in enumerate(ordered) if p.at <= start]
    first = before_start[-1] if before_start else 0
    used = ordered[first:]
    requests = errors = slow = 0.0
    for prev, cur in zip(used, used[1:]):
        requests += _delta(prev.requests, cur.requests)
        errors += _delta(prev.errors, cur.errors)
        slow += _delta(prev.slow, cur.slow)
    covered = used[-1].at - max(used[0].at, start)
    return WindowIncrease(requests, errors, slow, max(covered, dt.timedelta(0)))


def window_increase(series: Mapping[str, Sequence[CounterPoint]], start: dt.datetime,
                    end: dt.datetime) -> WindowIncrease:
    """Increase summed over every series (replica)."""
    parts = [series_increase(points, start, end) for points in series.values()]
    if not parts:
        return WindowIncrease(0.0, 0.0, 0.0, dt.timedelta(0))
    return WindowIncrease(
        sum(p.requests for p in parts), sum(p.errors for p in parts), sum(p.slow for p in parts),
        max(p.covered for p in parts),
    )


def burn_rate(bad: float, total: float, target: float) -> float:
    """Error ratio / error budget; no traffic burns nothing."""
    if not 0 < target < 1:
        raise ValueError(f"SLO target must be in (0, 1), got {target}")
    return 0.0 if total <= 0 else (bad / total) / (1.0 - target)


@dataclass(frozen=True)
class RuleResult:
    slo: str
    severity: Severity
    factor: float
    long_window_s: float
    short_window_s: float
    long_burn: float
    short_burn: float
    firing: bool


def evaluate_slo(series: Mapping[str, Sequence[CounterPoint]], now: dt.datetime, *, slo: str, target: float,
                 rules: Sequence[BurnRule] = SRE_RULES) -> list[RuleResult]:
    """Burn rates of one SLO ("availability" counts errors, "latency" counts slow requests)."""
    if slo not in ("availability", "latency"):
        raise ValueError(f"unknown SLO kind {slo!r}")
    results = []
    for rule in rules:
        burns = []
        for window in (rule.long_window, rule.short_window):
            inc = window_increase(series, now - window, now)
            bad = inc.errors if slo == "availability" else inc.slow
            burns.append(burn_rate(bad, inc.requests, target))
        long_burn, short_burn = burns
        results.append(RuleResult(slo, rule.severity, rule.factor, rule.long_window.total_seconds(),
                                  rule.short_window.total_seconds(), long_burn, short_burn,
                                  long_burn > rule.factor and short_burn > rule.factor))
    return results


def worst_severity(results: Sequence[RuleResult]) -> Severity:
    firing = {r.severity for r in results if r.firing}
    if Severity.PAGE in firing:
        return Severity.PAGE
    return Severity.TICKET if Severity.TICKET in firing else Severity.OK
