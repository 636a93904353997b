"""Parsing real prometheus_client output and windows between two scrapes."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from freshrec.core.errors import InvalidInput
from freshrec.pipeline.monitoring.promtext import METRICS, parse_scrape, window

BUCKETS = (0.001, 0.005, 0.01, 0.05)


def _registry():
    reg = CollectorRegistry()
    lat = Histogram(METRICS.latency.removesuffix("_seconds"), "latency", ["route", "variant", "version"],
                    registry=reg, buckets=BUCKETS, unit="seconds")
    err = Counter(METRICS.errors.removesuffix("_total"), "errors", ["route", "variant", "version"], registry=reg)
    score = Histogram(METRICS.scores, "scores", ["variant", "version"], registry=reg, buckets=(0.5, 1.0))
    fb = Counter(METRICS.feedback.removesuffix("_total"), "feedback", ["variant", "version", "event_type"],
                 registry=reg)
    Counter(METRICS.impressions.removesuffix("_total"), "impressions", ["variant", "version"],
            registry=reg).labels("canary", "2").inc(3)
    return reg, lat, err, score, fb


def test_parse_and_window_between_scrapes():
    reg, lat, err, score, fb = _registry()
    lat.labels("recommend", "champion", "1").observe(0.002)
    before = {"r1": parse_scrape(generate_latest(reg).decode())}
    for _ in range(3):
        lat.labels("recommend", "canary", "2").observe(0.02)
    lat.labels("recommend", "champion", "1").observe(0.004)
    lat.labels("healthz", "champion", "1").observe(0.5)  # not a user-facing route: ignored
    err.labels("recommend", "canary", "2").inc()
    score.labels("canary", "2").observe(0.7)
    fb.labels("canary", "2", "click").inc(2)
    fb.labels("canary", "2", "view").inc(5)  # only clicks count
    after = {"r1": parse_scrape(generate_latest(reg).decode())}
    assert after["r1"].versions["canary"] == {"2"}

    canary = window(before, after, "canary")
    assert canary.requests == 3
    assert canary.errors == 1
    assert canary.clicks == 2
    assert canary.impressions == 0  # incremented before the first scrape
    assert canary.latency.count_at_most(0.01) == 0
    assert canary.latency.count_at_most(0.05) == 3
    assert canary.scores.bucket_counts() == [0, 1, 0]
    champion = window(before, after, "champion")
    assert champion.requests == 1  # one new champion request in the window
    with pytest.raises(InvalidInput):
        canary.latency.count_at_most(0.02)


def test_a_restarted_replica_counts_from_zero():
    reg, lat, *_ = _registry()
    for _ in range(10):
        lat.labels("recommend", "champion", "1").observe(0.002)
    before = {"r1": parse_scrape(generate_latest(reg).decode())}
    reg2, lat2, *_ = _registry()
    for _ in range(4):
        lat2.labels("recommend", "champion", "1").observe(0.002)
    after = {"r1": parse_scrape(generate_latest(reg2).decode()), "r2": parse_scrape(generate_latest(reg2).decode())}
    # r1 restarted (10 -> 4 counts as 4); r2 is new (4).
    assert window(before, after, "champion").requests == 8


def test_garbage_is_a_clear_error():
    with pytest.raises(InvalidInput):
        parse_scrape("this is { not prometheus")
