"""One SLO evaluation: burn rates (service and canary), freshness and drift from stored snapshots.

Pure: it takes the snapshot rows, the champion/canary versions, the feature days and a drift reference,
and returns an `SloEvaluation` whose alerts and decisions (roll back the canary, retrain) the monitor
acts on.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from freshrec.pipeline.monitoring.burn import SRE_RULES, CounterPoint, RuleResult, Severity, evaluate_slo, worst_severity
from freshrec.pipeline.monitoring.freshness import Freshness
from freshrec.pipeline.monitoring.notify import Alert
from freshrec.pipeline.monitoring.promtext import Histogram, histogram_increase
from freshrec.pipeline.monitoring.stats import psi, psi_level
from freshrec.pipeline.monitoring.store import Snapshot

PAGE_RULES = tuple(r for r in SRE_RULES if r.severity is Severity.PAGE)
# Variants that answer users; "shadow" only mirrors and has no requests of its own.
USER_FACING = ("champion", "canary", "none")


def series(rows: Sequence[Snapshot], variants: Sequence[str]) -> dict[str, list[CounterPoint]]:
    """Per-replica counter series, summing the given variants of each scrape."""
    summed: dict[tuple[str, dt.datetime], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for row in rows:
        if row.variant in variants:
            acc = summed[(row.replica, row.taken_at)]
            acc[0] += row.requests
            acc[1] += row.errors
            acc[2] += row.slow
    out: dict[str, list[CounterPoint]] = defaultdict(list)
    for (replica, at), (requests, errors, slow) in sorted(summed.items(), key=lambda kv: kv[0][1]):
        out[replica].append(CounterPoint(at, requests, errors, slow))
    return dict(out)


def score_window(rows: Sequence[Snapshot], variant: str, start: dt.datetime) -> Histogram | None:
    """Increase of a variant's score histogram since `start`, summed over replicas."""
    per_replica: dict[str, list[Histogram]] = defaultdict(list)
    for row in rows:
        if row.variant == variant and row.score_bounds is not None and row.score_cumulative is not None and row.taken_at >= start:
            per_replica[row.replica].append(Histogram(row.score_bounds, row.score_cumulative))
    total: Histogram | None = None
    for histograms in per_replica.values():
        inc = histogram_increase(histograms[0], histograms[-1])
        if inc is None or inc.count <= 0:
            continue
        if total is None:
            total = inc
        elif total.bounds == inc.bounds:
            total = Histogram(total.bounds, [a + b for a, b in zip(total.cumulative, inc.cumulative)])
    return total


@dataclass
class Drift:
    version: str | None
    psi: float | None
    level: str | None
    observed: float
    note: str


def assess_drift(current: Histogram | None, reference: tuple[list[float], list[float]] | None,
                 version: str | None, min_scores: float) -> Drift:
    observed = current.count if current else 0.0
    if version is None or current is None or observed < min_scores:
        return Drift(version, None, None, observed, f"{observed:.0f} scores in the window, {min_scores:.0f} needed")
    if reference is None:
        return Drift(version, None, None, observed, "no reference yet: this window becomes the reference")
    bounds, counts = reference
    if list(bounds) != list(current.bounds):
        return Drift(version, None, None, observed, "score buckets changed since the reference")
    value = psi(counts, current.bucket_counts())
    return Drift(version, value, psi_level(value), observed, f"score PSI {value:.3f} vs the reference")


@dataclass
class SloEvaluation:
    evaluated_at: dt.datetime
    burn: list[RuleResult]
    canary_burn: list[RuleResult]
    freshness: Freshness
    drift: Drift
    canary_version: str | None
    max_drift_psi: float
    actions: list[str] = field(default_factory=list)

    @property
    def severity(self) -> Severity:
        return worst_severity(self.burn)

    @property
    def canary_burning(self) -> bool:
        return self.canary_version is not None and any(r.firing for r in self.canary_burn)

    @property
    def drifted(self) -> bool:
        return self.drift.psi is not None and self.drift.psi > self.max_drift_psi

    @property
    def retrain_reasons(self) -> list[str]:
        reasons = []
        if self.freshness.model_stale:
            age = self.freshness.model_age_h
            reasons.append("no champion" if age is None else
                           f"model age {age:.1f} h > {self.freshness.max_model_age_h:.1f} h")
        if self.drifted:
            reasons.append(f"score drift PSI {self.drift.psi:.3f} > {self.max_drift_psi}")
        return reasons

    def alerts(self) -> list[Alert]:
        alerts = [
            Alert(str(r.severity), f"{r.slo} SLO burning {r.long_burn:.1f}x over {r.long_window_s / 3600:g} h and "
                  f"{r.short_burn:.1f}x over {r.short_window_s / 60:g} min (threshold {r.factor}x)", r.slo, asdict(r))
            for r in self.burn if r.firing
        ]
        if self.canary_burning:
            alerts.append(Alert("page", f"canary {self.canary_version} burns its error budget: rolling back",
                                "canary", {"rules": [asdict(r) for r in self.canary_burn if r.firing]}))
        if self.freshness.features_stale:
            age = self.freshness.features_age_h
            alerts.append(Alert("ticket", "no published features" if age is None else
                                f"newest features are {age:.1f} h old (max {self.freshness.max_features_age_h:g} h)",
                                "freshness", asdict(self.freshness)))
        if self.retrain_reasons:
            alerts.append(Alert("ticket", "retrain needed: " + "; ".join(self.retrain_reasons), "freshness",
                                {"freshness": asdict(self.freshness), "drift": asdict(self.drift)}))
        return alerts

    def to_dict(self) -> dict[str, Any]:
        return {
            "evaluated_at": self.evaluated_at.isoformat(),
            "severity": str(self.severity),
            "burn": [{**asdict(r), "severity": str(r.severity)} for r in self.burn],
            "canary": {"version": self.canary_version, "burning": self.canary_burning,
                       "burn": [{**asdict(r), "severity": str(r.severity)} for r in self.canary_burn]},
            "freshness": {**asdict(self.freshness), "model_stale": self.freshness.model_stale,
                          "features_stale": self.freshness.features_stale},
            "drift": asdict(self.drift),
            "retrain_reasons": self.retrain_reasons,
            "alerts": [a.to_dict() for a in self.alerts()],
            "actions": list(self.actions),
        }


def evaluate(rows: Sequence[Snapshot], now: dt.datetime, *, availability_target: float, latency_target: float,
             freshness: Freshness, drift: Drift, canary_version: str | None, max_drift_psi: float,
             canary_since: dt.datetime | None = None) -> SloEvaluation:
    """`canary_since`: when the active canary started; earlier canary traffic (an earlier canary's) is
    not held against it."""
    service = series(rows, USER_FACING)
    burn = (evaluate_slo(service, now, slo="availability", target=availability_target)
            + evaluate_slo(service, now, slo="latency", target=latency_target))
    canary_burn: list[RuleResult] = []
    if canary_version is not None:
        canary = series([r for r in rows if canary_since is None or r.taken_at >= canary_since], ("canary",))
        canary_burn = (evaluate_slo(canary, now, slo="availability", target=availability_target, rules=PAGE_RULES)
                       + evaluate_slo(canary, now, slo="latency", target=latency_target, rules=PAGE_RULES))
    return SloEvaluation(now, burn, canary_burn, freshness, drift, canary_version, max_drift_psi)
