"""Prometheus metrics of the serving tier.

Latency buckets put a boundary exactly at the SLO threshold (``settings.serving.slo_latency_ms``) so a
burn-rate rule can count slow requests exactly. With several workers, PROMETHEUS_MULTIPROC_DIR switches
prometheus-client to its multiprocess mode and ``/metrics`` aggregates every worker's files.
"""

from __future__ import annotations

import os
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

BASE_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = (-20, -10, -5, -3, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 5, 10, 20)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TAIL_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def latency_buckets(slo_latency_ms: float) -> tuple[float, ...]:
    return tuple(sorted({*BASE_LATENCY_BUCKETS_S, slo_latency_ms / 1000}))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ServingMetrics:
    def __init__(self, slo_latency_ms: float) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram(
            "freshrec_request_latency_seconds", "Request latency by route, variant and version",
            ["route", "variant", "version"], buckets=latency_buckets(slo_latency_ms), registry=r,
        )
        self.requests = Counter(
            "freshrec_requests", "Requests by route, variant, version and status",
            ["route", "variant", "version", "status"], registry=r,
        )
        self.errors = Counter(
            "freshrec_request_errors", "Requests answered with a 5xx status", ["route", "variant", "version"], registry=r,
        )
        self.ort_seconds = Histogram(
            "freshrec_ort_seconds", "Time of one ONNX Runtime batch call", ["version"],
            buckets=latency_buckets(slo_latency_ms), registry=r,
        )
        self.batch_size = Histogram("freshrec_batch_size", "Requests per ORT call", ["version"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge(
            "freshrec_queue_depth", "Scoring jobs waiting", ["version"], multiprocess_mode="livesum", registry=r,
        )
        cache = Counter("freshrec_cache_requests", "Result cache lookups", ["result"], registry=r)
        self.cache_hit, self.cache_miss = cache.labels("hit"), cache.labels("miss")
        self.scores = Histogram(
            "freshrec_score", "Scores returned, per variant (drift / PSI)", ["variant", "version"],
            buckets=SCORE_BUCKETS, registry=r,
        )
        self.impressions = Counter(
            "freshrec_impressions", "Recommendation responses served per variant", ["variant", "version"], registry=r,
        )
        self.feedback = Counter(
            "freshrec_feedback", "Feedback events per variant", ["variant", "version", "event_type"], registry=r,
        )
        self.model_age = Gauge(
            "freshrec_model_age_seconds", "Age of the loaded model version", ["role", "version"],
            multiprocess_mode="livemax", registry=r,
        )
        self.model_info = Gauge(
            "freshrec_model_loaded", "1 per loaded version", ["role", "version", "artifact", "provider"],
            multiprocess_mode="livemax", registry=r,
        )
        self.canary_weight = Gauge("freshrec_canary_weight", "Canary traffic share (%)", multiprocess_mode="livemax", registry=r)
        self.load_failures = Counter("freshrec_model_load_failures", "Versions refused at load", ["version"], registry=r)
        self.reconciles = Counter("freshrec_reconciles", "Reconcile passes by outcome", ["outcome"], registry=r)
        # Real-time events (POST /v1/events): the log, the online store and the live tails.
        self.events_accepted = Counter("freshrec_events_accepted", "Events accepted (durable)", ["event_type"], registry=r)
        self.events_rejected = Counter("freshrec_events_rejected", "Events rejected, by rule", ["reason"], registry=r)
        self.unknown_items = Counter(
            "freshrec_unknown_item_events", "Accepted events on items the champion does not know (logged, not scored)",
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "freshrec_event_log_fsync_seconds", "One group commit's fsync of the ingestion log",
            buckets=BASE_LATENCY_BUCKETS_S, registry=r,
        )
        self.log_errors = Counter("freshrec_event_log_errors", "Ingestion log writes that failed", registry=r)
        self.store_seconds = Histogram(
            "freshrec_online_store_seconds", "Online store calls by operation", ["op"],
            buckets=BASE_LATENCY_BUCKETS_S, registry=r,
        )
        self.store_errors = Counter("freshrec_online_store_errors", "Online store calls that failed", ["op"], registry=r)
        self.store_up = Gauge(
            "freshrec_online_store_up", "1 while the online store answers (0: snapshot-only serving)",
            multiprocess_mode="livemin", registry=r,
        )
        self.visible_seconds = Histogram(
            "freshrec_event_visible_seconds", "From receiving events to their being visible in the online store",
            buckets=latency_buckets(slo_latency_ms), registry=r,
        )
        self.live_tail = Histogram(
            "freshrec_live_tail_events", "Live events (not yet in the snapshot) merged into one request's history",
            buckets=TAIL_BUCKETS, registry=r,
        )

        # labels() validates and locks on every call; the hot path reuses each child through these caches.
        self.request_children = lru_cache(maxsize=4096)(self._request_children)
        self.response_children = lru_cache(maxsize=1024)(self._response_children)

    def _request_children(self, route: str, variant: str, version: str, status: int):
        """(latency histogram, request counter, error counter or None) of one label combination."""
        errors = self.errors.labels(route, variant, version) if status >= 500 else None
        return self.latency.labels(route, variant, version), self.requests.labels(route, variant, version, str(status)), errors

    def _response_children(self, variant: str, version: str):
        """(score histogram, impressions counter) of one variant/version."""
        return self.scores.labels(variant, version), self.impressions.labels(variant, version)

    def observe_batch(self, version: str):
        ort_seconds, batch_size = self.ort_seconds.labels(version), self.batch_size.labels(version)

        def observe(size: int, seconds: float) -> None:
            batch_size.observe(size)
            ort_seconds.observe(seconds)

        return observe

    def exposition(self) -> bytes:
        if multiprocess_dir():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
