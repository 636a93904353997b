"""SLO evaluation over stored snapshots: service and canary burn, freshness, drift, alerts, storage."""

from __future__ import annotations

import datetime as dt
import logging
import math

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from sqlalchemy import create_engine

from freshrec.pipeline.monitoring import store
from freshrec.pipeline.monitoring.freshness import assess_freshness
from freshrec.pipeline.monitoring.notify import Alert, build_notifier
from freshrec.pipeline.monitoring.promtext import METRICS, parse_scrape
from freshrec.pipeline.monitoring.slo import Drift, assess_drift, evaluate, score_window, series
from freshrec.pipeline.monitoring.store import Snapshot

T = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
M = dt.timedelta(minutes=1)
BOUNDS = [0.0, 1.0, math.inf]


def _row(at, replica, variant, requests, errors=0.0, slow=0.0, scores=None):
    return Snapshot(at, replica, variant, "1", requests, errors, slow, 0.0, requests,
                    BOUNDS if scores else None, scores)


FRESH = assess_freshness(T - dt.timedelta(hours=1), [T.date() - dt.timedelta(days=1)], T,
                         max_model_age_h=48, max_features_age_h=48)
NO_DRIFT = Drift("1", None, None, 0.0, "n/a")


def test_series_sums_variants_per_replica_and_scrape():
    rows = [_row(T - M, "a", "champion", 100, 1), _row(T - M, "a", "canary", 10, 2),
            _row(T, "a", "champion", 200, 1), _row(T, "a", "canary", 20, 4), _row(T, "b", "champion", 50)]
    both = series(rows, ("champion", "canary"))
    assert [(p.requests, p.errors) for p in both["a"]] == [(110, 3), (220, 5)]
    assert [(p.requests, p.errors) for p in series(rows, ("canary",))["a"]] == [(10, 2), (20, 4)]


def test_a_slow_canary_burns_while_the_service_does_not():
    rows = []
    for i, at in enumerate([T - 10 * M, T - 5 * M, T]):
        rows.append(_row(at, "a", "champion", 10000 * i))
        # every canary request is slower than the threshold (latency SLO 99%: burn = 1 / 0.01 = 100x)
        rows.append(_row(at, "a", "canary", 100 * i, slow=100 * i))
    ev = evaluate(rows, T, availability_target=0.999, latency_target=0.99, freshness=FRESH, drift=NO_DRIFT,
                  canary_version="2", max_drift_psi=0.25)
    assert ev.canary_burning
    fast = next(r for r in ev.canary_burn if r.slo == "latency" and r.factor == 14.4)
    assert fast.long_burn == pytest.approx(100.0) and fast.short_burn == pytest.approx(100.0)
    service_latency = next(r for r in ev.burn if r.slo == "latency" and r.factor == 14.4)
    # 200 slow of 20200: 0.99% / 1% = 0.99x, nowhere near a page
    assert service_latency.long_burn == pytest.approx(200 / 20200 / 0.01)
    assert str(ev.severity) == "ok"
    assert any(a.source == "canary" and a.severity == "page" for a in ev.alerts())
    # Traffic from before this canary started (an earlier canary) is not held against it.
    later = evaluate(rows, T, availability_target=0.999, latency_target=0.99, freshness=FRESH, drift=NO_DRIFT,
                     canary_version="2", max_drift_psi=0.25, canary_since=T - M)
    assert not later.canary_burning


def test_stale_model_and_drift_ask_for_retrain():
    stale = assess_freshness(T - dt.timedelta(hours=72), [], T, max_model_age_h=48, max_features_age_h=48)
    drift = Drift("1", 0.4, "significant", 1000, "x")
    ev = evaluate([], T, availability_target=0.999, latency_target=0.99, freshness=stale, drift=drift,
                  canary_version=None, max_drift_psi=0.25)
    assert ev.retrain_reasons == ["model age 72.0 h > 48.0 h", "score drift PSI 0.400 > 0.25"]
    kinds = {(a.severity, a.source) for a in ev.alerts()}
    assert ("ticket", "freshness") in kinds
    assert ev.to_dict()["freshness"]["features_stale"] is True


def test_drift_against_the_first_reference():
    rows = [_row(T - 30 * M, "a", "champion", 0, scores=[0, 0, 0]),
            _row(T, "a", "champion", 0, scores=[100, 600, 1000])]
    current = score_window(rows, "champion", T - 60 * M)
    assert current.bucket_counts() == [100, 500, 400]
    assert assess_drift(current, None, "1", 500).note.startswith("no reference")
    same = assess_drift(current, (BOUNDS, [100, 500, 400]), "1", 500)
    assert same.psi == pytest.approx(0.0) and same.level == "none"
    moved = assess_drift(current, (BOUNDS, [400, 500, 100]), "1", 500)
    assert moved.level == "significant"
    assert assess_drift(current, None, "1", 5000).psi is None  # too few scores


def test_snapshots_round_trip_through_the_database(tmp_path):
    reg = CollectorRegistry()
    lat = Histogram(METRICS.latency.removesuffix("_seconds"), "l", ["route", "variant", "version"], registry=reg,
                    buckets=(0.005, 0.01, 0.05), unit="seconds")
    for value in (0.001, 0.002, 0.02):
        lat.labels("recommend", "champion", "1").observe(value)
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    store.metadata.create_all(engine)
    rows = store.snapshots_from_scrapes({"http://r1": parse_scrape(generate_latest(reg).decode())}, T, 0.01)
    assert [(r.variant, r.requests, r.slow) for r in rows] == [("champion", 3, 1)]
    store.save_snapshots(engine, rows)
    loaded = store.load_snapshots(engine, T - M)
    assert loaded[0].taken_at == T and loaded[0].requests == 3
    store.save_status(engine, T, "ok", {"x": 1})
    assert store.status_log(engine)[0]["severity"] == "ok"
    store.save_reference(engine, "1", T, BOUNDS, [1, 2, 3])
    store.save_reference(engine, "1", T, BOUNDS, [9, 9, 9])  # the first reference stays
    assert store.get_reference(engine, "1") == (BOUNDS, [1, 2, 3])
    assert store.prune_snapshots(engine, T + M) == 1


def test_notifier_logs_and_posts_to_a_webhook(caplog, monkeypatch):
    import http.server
    import json
    import threading

    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # A library's dictConfig run by an earlier test of this worker (disable_existing_loggers) may have
        # disabled the logger; this test is about the notifier, not about that test's logging setup.
        monkeypatch.setattr(logging.getLogger("freshrec.alerts"), "disabled", False)
        notifier = build_notifier(f"http://127.0.0.1:{server.server_port}/hook")
        with caplog.at_level(logging.WARNING, logger="freshrec.alerts"):
            notifier.notify(Alert("page", "availability burning", "availability", {"burn": 20}))
    finally:
        server.shutdown()
    assert received and received[0]["alert"]["severity"] == "page"
    assert "availability burning" in caplog.text
    # A dead webhook does not swallow the alert.
    with caplog.at_level(logging.WARNING, logger="freshrec.alerts"):
        build_notifier("http://127.0.0.1:9/none").notify(Alert("ticket", "still logged", "x"))
    assert "still logged" in caplog.text
