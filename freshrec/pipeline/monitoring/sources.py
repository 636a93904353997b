"""Where the SLO monitor reads counters: each replica's /metrics, or a Prometheus server.

Both return `{source name: Scrape}` so everything downstream is the same. With Prometheus the counters
are summed over instances by the server (`sum by (variant, le)`), so the source is one series.
"""

from __future__ import annotations

from typing import Any

import httpx

from freshrec.core.settings import Settings
from freshrec.pipeline.monitoring.promtext import METRICS, Histogram, Scrape, VariantCounters
from freshrec.pipeline.monitoring.serving_api import ServingClient, ServingUnavailable

_ROUTES = "|".join(METRICS.routes)
QUERIES = {
    "latency": f'sum by (variant, le) ({METRICS.latency}_bucket{{route=~"{_ROUTES}"}})',
    "errors": f'sum by (variant) ({METRICS.errors}{{route=~"{_ROUTES}"}})',
    "scores": f"sum by (variant, le) ({METRICS.scores}_bucket)",
    "clicks": f'sum by (variant) ({METRICS.feedback}{{event_type="click"}})',
    "impressions": f"sum by (variant) ({METRICS.impressions})",
}


def _vector(prometheus_url: str, query: str, http: httpx.Client) -> list[dict[str, Any]]:
    url = f"{prometheus_url.rstrip('/')}/api/v1/query"
    try:
        response = http.get(url, params={"query": query})
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ServingUnavailable(f"Prometheus query failed at {url}: {exc}") from exc
    if body.get("status") != "success":
        raise ServingUnavailable(f"Prometheus query {query!r} failed: {body.get('error')}")
    return body["data"]["result"]


def _histograms(samples: list[dict[str, Any]]) -> dict[str, Histogram]:
    buckets: dict[str, dict[float, float]] = {}
    for sample in samples:
        variant = sample["metric"].get("variant", "none")
        buckets.setdefault(variant, {})[float(sample["metric"]["le"])] = float(sample["value"][1])
    return {v: Histogram(sorted(b), [b[k] for k in sorted(b)]) for v, b in buckets.items()}


def scrape_prometheus(prometheus_url: str, timeout_s: float = 10.0) -> Scrape:
    scrape = Scrape()
    with httpx.Client(timeout=timeout_s) as http:
        results = {name: _vector(prometheus_url, query, http) for name, query in QUERIES.items()}

    def counters(variant: str) -> VariantCounters:
        return scrape.variants.setdefault(variant, VariantCounters())

    for variant, hist in _histograms(results["latency"]).items():
        counters(variant).latency = hist
    for variant, hist in _histograms(results["scores"]).items():
        counters(variant).scores = hist
    for field in ("errors", "clicks", "impressions"):
        for sample in results[field]:
            variant = sample["metric"].get("variant", "none")
            setattr(counters(variant), field, float(sample["value"][1]))
    return scrape


def read_counters(settings: Settings) -> dict[str, Scrape]:
    if settings.monitoring.prometheus_url:
        return {"prometheus": scrape_prometheus(settings.monitoring.prometheus_url)}
    with ServingClient(settings) as client:
        return client.scrape_all()
