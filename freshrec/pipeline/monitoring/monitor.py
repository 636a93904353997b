"""The SLO monitor's stages (the `slo_monitor` DAG wires them): collect -> evaluate -> act."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import Engine

from freshrec.core.layout import Layout
from freshrec.core.registry import Registry
from freshrec.core.settings import Settings
from freshrec.pipeline.monitoring import store
from freshrec.pipeline.monitoring.freshness import assess_freshness
from freshrec.pipeline.monitoring.notify import Notifier
from freshrec.pipeline.monitoring.serving_api import ServingClient
from freshrec.pipeline.monitoring.slo import SloEvaluation, assess_drift, evaluate, score_window
from freshrec.pipeline.monitoring.sources import read_counters

log = logging.getLogger(__name__)
ACTOR = "slo_monitor"
HISTORY = dt.timedelta(days=3, hours=1)   # the longest burn window (3 d) plus a baseline point
DRIFT_WINDOW = dt.timedelta(hours=1)
DRIFT_MIN_SCORES = 500


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def collect(settings: Settings, engine: Engine, now: dt.datetime | None = None) -> int:
    """Store one counter snapshot per replica and variant; drop snapshots past retention."""
    now = now or utcnow()
    rows = store.snapshots_from_scrapes(read_counters(settings), now, settings.serving.slo_latency_ms / 1000)
    saved = store.save_snapshots(engine, rows)
    store.prune_snapshots(engine, now - dt.timedelta(days=settings.monitoring.retention_days))
    return saved


def _canary_started(registry: Registry, version: int) -> dt.datetime | None:
    starts = [e.at for e in registry.audit_log(version) if e.action == "start_canary"]
    if not starts:
        return None
    at = max(starts)
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def check(settings: Settings, engine: Engine, registry: Registry, now: dt.datetime | None = None, *,
          record: bool = True) -> SloEvaluation:
    """Evaluate burn rates, freshness and drift over the stored snapshots; record the status."""
    now = now or utcnow()
    m = settings.monitoring
    rows = store.load_snapshots(engine, now - HISTORY)
    state = registry.serving_state()
    champion, canary = state.champion, state.canary
    freshness = assess_freshness(champion.created_at if champion else None, Layout(settings.home).feature_days(), now,
                                 max_model_age_h=m.max_model_age_h, max_features_age_h=m.max_features_age_h)
    version = str(champion.version) if champion else None
    current = score_window(rows, "champion", now - DRIFT_WINDOW)
    reference = store.get_reference(engine, version) if version else None
    drift = assess_drift(current, reference, version, DRIFT_MIN_SCORES)
    if version and reference is None and current is not None and current.count >= DRIFT_MIN_SCORES:
        store.save_reference(engine, version, now, current.bounds, current.bucket_counts())
    evaluation = evaluate(
        rows, now, availability_target=m.availability_target, latency_target=m.latency_target,
        freshness=freshness, drift=drift, canary_version=str(canary.version) if canary else None,
        max_drift_psi=m.max_drift_psi, canary_since=_canary_started(registry, canary.version) if canary else None,
    )
    if record:
        store.save_status(engine, now, str(evaluation.severity), evaluation.to_dict())
    return evaluation


def act(settings: Settings, evaluation: SloEvaluation, registry: Registry, notifier: Notifier) -> list[str]:
    """Alert, and roll back a canary that burns its budget. Returns what was done."""
    actions: list[str] = []
    for alert in evaluation.alerts():
        notifier.notify(alert)
        actions.append(f"alert {alert.severity}: {alert.summary}")
    if evaluation.canary_burning:
        state = registry.serving_state()
        if state.canary is not None and str(state.canary.version) == evaluation.canary_version:
            firing = [r for r in evaluation.canary_burn if r.firing]
            reasons = [f"slo_monitor: canary {r.slo} burn {r.short_burn:.1f}x (short) / {r.long_burn:.1f}x (long) "
                       f"> {r.factor}x" for r in firing]
            evidence: dict[str, Any] = {"stage": "slo_monitor", "status": evaluation.to_dict()}
            registry.reject(state.canary.version, reasons, evidence, actor=ACTOR)
            registry.record_verdict(state.canary.version, {"verdict": "rolled_back", "reasons": reasons, **evidence},
                                    actor=ACTOR)
            with ServingClient(settings) as client:
                client.reconcile_all()
            actions.append(f"rolled back canary {evaluation.canary_version}")
    return actions
