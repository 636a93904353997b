"""Multiwindow burn rates against hand-computed windows."""

from __future__ import annotations

import datetime as dt

import pytest

from freshrec.pipeline.monitoring.burn import (
    CounterPoint,
    Severity,
    burn_rate,
    evaluate_slo,
    series_increase,
    window_increase,
    worst_severity,
)

T = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
M = dt.timedelta(minutes=1)


def _series():
    # Replica a counts steadily; replica b restarted between T-60m and T-30m (its counters dropped).
    return {
        "a": [CounterPoint(T - 60 * M, 1000, 0, 0), CounterPoint(T - 5 * M, 10000, 100, 50),
              CounterPoint(T, 11000, 200, 60)],
        "b": [CounterPoint(T - 60 * M, 500, 5, 0), CounterPoint(T - 30 * M, 100, 1, 0),
              CounterPoint(T, 600, 7, 2)],
    }


def test_increase_is_reset_aware_and_starts_at_the_last_point_before_the_window():
    series = _series()
    b = series_increase(series["b"], T - 60 * M, T)
    # 500 -> 100 is a restart: +100, then +500
    assert (b.requests, b.errors, b.slow) == (600, 7, 2)
    five = window_increase(series, T - 5 * M, T)
    # a: 10000 -> 11000; b: its last point at or before T-5m is T-30m (100 -> 600)
    assert (five.requests, five.errors, five.slow) == (1500, 106, 12)
    assert five.covered == 5 * M
    # Six hours asked, one hour recorded: the coverage says so.
    assert window_increase(series, T - 360 * M, T).covered == 60 * M


def test_burn_rate_definition():
    assert burn_rate(2, 1000, 0.999) == pytest.approx(2.0)
    assert burn_rate(0, 0, 0.999) == 0.0
    with pytest.raises(ValueError):
        burn_rate(1, 10, 1.0)


def test_availability_pages_when_both_windows_burn():
    results = evaluate_slo(_series(), T, slo="availability", target=0.999)
    by_rule = {(r.long_window_s, r.short_window_s): r for r in results}
    fast = by_rule[(3600, 300)]
    # 1h: (200 + 7) / (10000 + 600) / 0.001 ; 5m: (100 + 6) / (1000 + 500) / 0.001
    assert fast.long_burn == pytest.approx(207 / 10600 / 0.001)
    assert fast.short_burn == pytest.approx(106 / 1500 / 0.001)
    assert fast.firing
    slow = by_rule[(6 * 3600, 1800)]
    # 6h: no snapshot before the window, so the first one is the baseline (same as 1h);
    # 30m: a from T-60m (10000 req, 200 err), b from T-30m (500 req, 6 err)
    assert slow.long_burn == pytest.approx(207 / 10600 / 0.001)
    assert slow.short_burn == pytest.approx(206 / 10500 / 0.001)
    assert slow.firing
    assert worst_severity(results) is Severity.PAGE


def test_latency_slo_counts_slow_requests_as_errors():
    results = evaluate_slo(_series(), T, slo="latency", target=0.99)
    fast = results[0]
    assert fast.long_burn == pytest.approx(62 / 10600 / 0.01)
    assert fast.short_burn == pytest.approx(12 / 1500 / 0.01)
    assert not any(r.firing for r in results)
    assert worst_severity(results) is Severity.OK


def test_a_fixed_incident_stops_paging_once_the_short_window_is_clean():
    # 3% errors for most of the hour, then a clean last 10 minutes.
    series = {"a": [CounterPoint(T - 60 * M, 0, 0, 0), CounterPoint(T - 10 * M, 10000, 300, 0),
                    CounterPoint(T - 5 * M, 11000, 300, 0), CounterPoint(T, 12000, 300, 0)]}
    fast = evaluate_slo(series, T, slo="availability", target=0.999)[0]
    assert fast.long_burn == pytest.approx(300 / 12000 / 0.001)  # 25x: the hour still burns
    assert fast.short_burn == 0.0
    assert not fast.firing


def test_ticket_only_for_a_slow_steady_burn():
    # 0.2% errors all along: 2x burn, below both page factors, above the ticket factor.
    pts = [CounterPoint(T - h * dt.timedelta(hours=1), (72 - h) * 10000, (72 - h) * 20, 0) for h in range(72, -1, -1)]
    results = evaluate_slo({"a": pts}, T, slo="availability", target=0.999)
    assert [r.firing for r in results] == [False, False, True]
    assert all(r.long_burn == pytest.approx(2.0) for r in results)
    assert worst_severity(results) is Severity.TICKET
