"""SLO monitor state in the registry database: counter snapshots, status history, drift references.

These tables have their own MetaData and are created with ``create_all`` (idempotent), so the
monitor never touches the registry's Alembic-managed schema.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Engine, Float, Integer, MetaData, String, Table, create_engine, delete, insert, select

from freshrec.core.settings import Settings
from freshrec.pipeline.monitoring.burn import CounterPoint
from freshrec.pipeline.monitoring.promtext import Scrape

metadata = MetaData()

snapshots = Table(
    "slo_counter_snapshots", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("taken_at", DateTime(timezone=True), nullable=False, index=True),
    Column("replica", String(512), nullable=False),
    Column("variant", String(32), nullable=False),
    Column("versions", String(256), nullable=False, default=""),
    Column("requests", Float, nullable=False),
    Column("errors", Float, nullable=False),
    Column("slow", Float, nullable=False),
    Column("clicks", Float, nullable=False),
    Column("impressions", Float, nullable=False),
    Column("score_bounds", JSON, nullable=True),
    Column("score_cumulative", JSON, nullable=True),
)

status_history = Table(
    "slo_status_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("evaluated_at", DateTime(timezone=True), nullable=False, index=True),
    Column("severity", String(16), nullable=False),
    Column("status", JSON, nullable=False),
)

drift_references = Table(
    "slo_drift_references", metadata,
    Column("version", String(32), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("score_bounds", JSON, nullable=False),
    Column("score_counts", JSON, nullable=False),
)


def open_store(settings: Settings) -> Engine:
    engine = create_engine(settings.effective_registry_url)
    metadata.create_all(engine)
    return engine


@dataclass(frozen=True)
class Snapshot:
    taken_at: dt.datetime
    replica: str
    variant: str
    versions: str
    requests: float
    errors: float
    slow: float
    clicks: float
    impressions: float
    score_bounds: list[float] | None
    score_cumulative: list[float] | None

    def point(self) -> CounterPoint:
        return CounterPoint(self.taken_at, self.requests, self.errors, self.slow)


def _json_bounds(bounds: Sequence[float]) -> list[float | str]:
    return ["+Inf" if math.isinf(b) else b for b in bounds]


def _float_bounds(bounds: Sequence[float | str]) -> list[float]:
    return [math.inf if b == "+Inf" else float(b) for b in bounds]


def snapshots_from_scrapes(scrapes: dict[str, Scrape], taken_at: dt.datetime, slo_latency_s: float) -> list[Snapshot]:
    """One row per replica and variant; `slow` counts requests above the latency SLO threshold."""
    rows = []
    for replica, scrape in scrapes.items():
        for variant, counters in scrape.variants.items():
            latency = counters.latency
            requests = latency.count if latency else 0.0
            slow = requests - latency.count_at_most(slo_latency_s) if latency else 0.0
            scores = counters.scores
            rows.append(Snapshot(
                taken_at, replica, variant, ",".join(sorted(scrape.versions.get(variant, ()))), requests,
                counters.errors, slow, counters.clicks, counters.impressions,
                list(scores.bounds) if scores else None, list(scores.cumulative) if scores else None,
            ))
    return rows


def save_snapshots(engine: Engine, rows: Iterable[Snapshot]) -> int:
    values = [{
        "taken_at": r.taken_at, "replica": r.replica, "variant": r.variant, "versions": r.versions,
        "requests": r.requests, "errors": r.errors, "slow": r.slow, "clicks": r.clicks,
        "impressions": r.impressions,
        "score_bounds": _json_bounds(r.score_bounds) if r.score_bounds is not None else None,
        "score_cumulative": r.score_cumulative,
    } for r in rows]
    if values:
        with engine.begin() as conn:
            conn.execute(insert(snapshots), values)
    return len(values)


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything here is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def load_snapshots(engine: Engine, since: dt.datetime) -> list[Snapshot]:
    with engine.connect() as conn:
        rows = conn.execute(select(snapshots).where(snapshots.c.taken_at >= since).order_by(snapshots.c.taken_at))
        return [Snapshot(
            _aware(r.taken_at), r.replica, r.variant, r.versions, r.requests, r.errors, r.slow, r.clicks,
            r.impressions, _float_bounds(r.score_bounds) if r.score_bounds is not None else None, r.score_cumulative,
        ) for r in rows]


def prune_snapshots(engine: Engine, before: dt.datetime) -> int:
    with engine.begin() as conn:
        return conn.execute(delete(snapshots).where(snapshots.c.taken_at < before)).rowcount


def save_status(engine: Engine, evaluated_at: dt.datetime, severity: str, status: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(status_history).values(evaluated_at=evaluated_at, severity=severity, status=status))


def status_log(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(status_history).order_by(status_history.c.id.desc()).limit(limit))
        return [{"evaluated_at": _aware(r.evaluated_at).isoformat(), "severity": r.severity, **r.status} for r in rows]


def get_reference(engine: Engine, version: str) -> tuple[list[float], list[float]] | None:
    with engine.connect() as conn:
        row = conn.execute(select(drift_references).where(drift_references.c.version == version)).first()
    return None if row is None else (_float_bounds(row.score_bounds), list(row.score_counts))


def save_reference(engine: Engine, version: str, created_at: dt.datetime, bounds: Sequence[float],
                   counts: Sequence[float]) -> None:
    with engine.begin() as conn:
        if conn.execute(select(drift_references.c.version).where(drift_references.c.version == version)).first():
            return  # the first reference of a version stays: drift is measured against it
        conn.execute(insert(drift_references).values(version=version, created_at=created_at,
                                                     score_bounds=_json_bounds(bounds), score_counts=list(counts)))
