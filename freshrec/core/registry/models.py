"""ORM tables of the model registry (SQLAlchemy 2.x typed mappings).

The Alembic migrations under ``migrations/versions`` create exactly these tables; a test compares the
two so they cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Explicit constraint names keep migrations identical on SQLite and Postgres.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ALIAS_NAMES = ("champion", "canary", "previous")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the registry; use UTC-aware datetimes")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: UTCDateTime}


class Model(Base):
    """A registered model name; its ``generation`` bumps with every alias, weight or fault change."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Version(Base):
    __tablename__ = "versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    bundle_dir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    faults: Mapped[dict[str, Any]] = mapped_column(default=dict)
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)

    artifacts: Mapped[list[Artifact]] = relationship(order_by="Artifact.variant", cascade="all, delete-orphan")
    metrics: Mapped[list[Metric]] = relationship(order_by="Metric.name", cascade="all, delete-orphan")
    lineage: Mapped[Lineage | None] = relationship(
        foreign_keys="Lineage.version", cascade="all, delete-orphan", uselist=False
    )
    verdicts: Mapped[list[Verdict]] = relationship(order_by="Verdict.id", cascade="all, delete-orphan")


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("version", "variant", name="uq_artifacts_version_variant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(ForeignKey("versions.version"), index=True)
    variant: Mapped[str] = mapped_column(String(32))
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)


class Metric(Base):
    """One top-level metric (a number or a nested JSON group such as per-model results)."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("version", "name", name="uq_metrics_version_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(ForeignKey("versions.version"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    value: Mapped[Any] = mapped_column(JSON, nullable=True)


class Lineage(Base):
    """Where a version came from: features, code, orchestration run, warm-start parent."""

    __tablename__ = "lineage"

    version: Mapped[int] = mapped_column(ForeignKey("versions.version"), primary_key=True)
    feature_days: Mapped[list[Any]] = mapped_column(default=list)
    feature_manifests: Mapped[list[Any]] = mapped_column(default=list)
    code_version: Mapped[str | None] = mapped_column(Text)
    dag_run_id: Mapped[str | None] = mapped_column(Text)
    parent_version: Mapped[int | None] = mapped_column(ForeignKey("versions.version"))
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Alias(Base):
    """champion / canary / previous of a model; rows always exist, ``version`` is NULL when unset."""

    __tablename__ = "aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int | None] = mapped_column(ForeignKey("versions.version"))
    weight: Mapped[float] = mapped_column(Float, default=0.0)
    shadow: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Verdict(Base):
    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(ForeignKey("versions.version"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str | None] = mapped_column(Text)
    verdict: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AuditEntryRow(Base):
    """Append-only: database triggers (see the migrations) refuse UPDATE and DELETE."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    version: Mapped[int | None] = mapped_column(ForeignKey("versions.version"), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    before: Mapped[dict[str, Any]] = mapped_column(default=dict)
    after: Mapped[dict[str, Any]] = mapped_column(default=dict)
