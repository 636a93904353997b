"""Prometheus text exposition -> per-variant counters, and windows between two scrapes.

The serving tier exports (see serving/metrics): a request-latency histogram, an error counter, a
score histogram and a feedback counter, all labelled with ``variant`` (champion|canary) and
``version``. A canary analysis or an SLO window is the *difference* of two scrapes, summed over
replicas; a counter that went down (a replica restarted) counts from zero, as Prometheus' increase().
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from freshrec.core.errors import InvalidInput


@dataclass(frozen=True)
class MetricNames:
    """Names of the serving metrics the analyses read (the serving plane's /metrics contract)."""

    latency: str = "freshrec_request_latency_seconds"
    errors: str = "freshrec_request_errors_total"
    scores: str = "freshrec_score"
    feedback: str = "freshrec_feedback_total"
    impressions: str = "freshrec_impressions_total"
    # Route labels that count for SLOs and canary analysis (the user-facing ones).
    routes: tuple[str, ...] = ("recommend", "score")
    click_event_types: tuple[str, ...] = ("click",)


METRICS = MetricNames()


@dataclass
class Histogram:
    """A cumulative histogram: upper bounds (ascending, +Inf last) and cumulative counts."""

    bounds: list[float]
    cumulative: list[float]
    total: float = 0.0

    @property
    def count(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def count_at_most(self, bound: float) -> float:
        """Observations <= bound; bound must be a bucket boundary (the SLO threshold is one)."""
        for b, c in zip(self.bounds, self.cumulative):
            if math.isclose(b, bound, rel_tol=1e-9, abs_tol=1e-12):
                return c
        raise InvalidInput(f"{bound} is not a bucket boundary of the histogram {self.bounds}; "
                           "put a bucket boundary exactly at the SLO threshold")

    def bucket_counts(self) -> list[float]:
        """Non-cumulative counts per bucket."""
        return [c - p for c, p in zip(self.cumulative, [0.0, *self.cumulative[:-1]])]


@dataclass
class VariantCounters:
    """Cumulative counters of one variant (summed over versions and routes of interest)."""

    latency: Histogram | None = None
    errors: float = 0.0
    scores: Histogram | None = None
    clicks: float = 0.0
    impressions: float = 0.0  # recommendation responses served (the CTR denominator)

    @property
    def requests(self) -> float:
        return self.latency.count if self.latency else 0.0


@dataclass
class Scrape:
    """One replica's counters, keyed by variant ("champion"/"canary"), plus the versions seen."""

    variants: dict[str, VariantCounters] = field(default_factory=dict)
    versions: dict[str, set[str]] = field(default_factory=dict)

    def variant(self, name: str) -> VariantCounters:
        return self.variants.get(name, VariantCounters())


def parse_scrape(text: str, names: MetricNames = METRICS) -> Scrape:
    """Parse one /metrics body into per-variant cumulative counters."""
    latency: dict[str, dict[float, float]] = {}
    latency_sum: dict[str, float] = {}
    scores: dict[str, dict[float, float]] = {}
    scrape = Scrape()
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise InvalidInput(f"not Prometheus text exposition: {exc}") from exc
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            variant = labels.get("variant")
            if variant is None:
                continue
            if "version" in labels:
                scrape.versions.setdefault(variant, set()).add(labels["version"])
            counters = scrape.variants.setdefault(variant, VariantCounters())
            if sample.name == f"{names.latency}_bucket" and labels.get("route") in names.routes:
                buckets = latency.setdefault(variant, {})
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == f"{names.latency}_sum" and labels.get("route") in names.routes:
                latency_sum[variant] = latency_sum.get(variant, 0.0) + sample.value
            elif sample.name == names.errors and labels.get("route") in names.routes:
                counters.errors += sample.value
            elif sample.name == f"{names.scores}_bucket":
                buckets = scores.setdefault(variant, {})
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == names.impressions:
                counters.impressions += sample.value
            elif sample.name == names.feedback and labels.get(
                "event_type", "click"
            ) in names.click_event_types:
                counters.clicks += sample.value
    for variant, buckets in latency.items():
        scrape.variants[variant].latency = _histogram(buckets, latency_sum.get(variant, 0.0))
    for variant, buckets in scores.items():
        scrape.variants[variant].scores = _histogram(buckets, 0.0)
    return scrape


def _histogram(buckets: Mapping[float, float], total: float) -> Histogram:
    bounds = sorted(buckets)
    return Histogram(bounds=bounds, cumulative=[buckets[b] for b in bounds], total=total)


def _increase(before: float, after: float) -> float:
    # A counter that went down means the process restarted and counts from zero again.
    return after - before if after >= before else after


def histogram_increase(before: Histogram | None, after: Histogram | None) -> Histogram | None:
    if after is None:
        return None
    if before is None or before.bounds != after.bounds or after.count < before.count:
        return Histogram(list(after.bounds), list(after.cumulative), after.total)
    return Histogram(
        list(after.bounds),
        [_increase(b, a) for b, a in zip(before.cumulative, after.cumulative)],
        _increase(before.total, after.total),
    )


def counters_increase(before: VariantCounters, after: VariantCounters) -> VariantCounters:
    return VariantCounters(
        latency=histogram_increase(before.latency, after.latency),
        errors=_increase(before.errors, after.errors),
        scores=histogram_increase(before.scores, after.scores),
        clicks=_increase(before.clicks, after.clicks),
        impressions=_increase(before.impressions, after.impressions),
    )


def add_histograms(a: Histogram | None, b: Histogram | None) -> Histogram | None:
    if a is None or b is None:
        return a or b
    if a.bounds != b.bounds:
        raise InvalidInput("replicas export different histogram buckets; they must share one configuration")
    return Histogram(list(a.bounds), [x + y for x, y in zip(a.cumulative, b.cumulative)], a.total + b.total)


def add_counters(a: VariantCounters, b: VariantCounters) -> VariantCounters:
    return VariantCounters(
        latency=add_histograms(a.latency, b.latency),
        errors=a.errors + b.errors,
        scores=add_histograms(a.scores, b.scores),
        clicks=a.clicks + b.clicks,
        impressions=a.impressions + b.impressions,
    )


def window(before: Mapping[str, Scrape], after: Mapping[str, Scrape], variant: str) -> VariantCounters:
    """Increase of one variant's counters between two scrapes of every replica (keyed by replica URL)."""
    total = VariantCounters()
    for replica, later in after.items():
        earlier = before.get(replica, Scrape())
        total = add_counters(total, counters_increase(earlier.variant(variant), later.variant(variant)))
    return total


def sum_scrapes(scrapes: Iterable[Scrape], variant: str) -> VariantCounters:
    """Cumulative counters of one variant summed over replicas."""
    total = VariantCounters()
    for scrape in scrapes:
        total = add_counters(total, scrape.variant(variant))
    return total
