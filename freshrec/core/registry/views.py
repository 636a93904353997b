"""Immutable views the registry hands out; callers never see ORM objects or sessions."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    CANDIDATE = "candidate"
    CANARY = "canary"
    CHAMPION = "champion"
    ARCHIVED = "archived"
    REJECTED = "rejected"


# The state machine: every move the registry makes is checked against this table.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.CANDIDATE: frozenset({State.CANARY, State.CHAMPION, State.REJECTED}),
    State.CANARY: frozenset({State.CHAMPION, State.REJECTED}),
    State.CHAMPION: frozenset({State.ARCHIVED}),
    # An archived version comes back as champion on a rollback (it was `previous`) or by hand.
    State.ARCHIVED: frozenset({State.CHAMPION}),
    State.REJECTED: frozenset(),
}


@dataclass(frozen=True)
class ArtifactView:
    uri: str
    sha256: str
    size: int
    variant: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    action: str
    version: int | None
    reason: str | None
    before: dict[str, Any]
    after: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "version": None if self.version is None else str(self.version),
            "reason": self.reason,
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True)
class VersionView:
    version: int
    state: str
    bundle_dir: str
    artifacts: Mapping[str, ArtifactView]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    faults: dict[str, Any]
    verdicts: list[dict[str, Any]]
    created_at: dt.datetime
    reasons: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    created_by: str = ""
    updated_at: dt.datetime | None = None
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the version is a string ("7") as everywhere outside Python."""
        return {
            "version": str(self.version),
            "model": self.model,
            "state": self.state,
            "bundle_dir": self.bundle_dir,
            "artifacts": {name: a.to_dict() for name, a in self.artifacts.items()},
            "metrics": self.metrics,
            "lineage": self.lineage,
            "faults": self.faults,
            "verdicts": self.verdicts,
            "reasons": self.reasons,
            "evidence": self.evidence,
            "card": self.card,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class ServingState:
    """What the serving tier should load: poll ``generation`` and reconcile when it changes."""

    champion: VersionView | None
    canary: VersionView | None
    previous: VersionView | None
    canary_weight: float
    shadow: bool
    generation: int

    def to_dict(self) -> dict[str, Any]:
        def short(v: VersionView | None) -> str | None:
            return None if v is None else str(v.version)

        return {
            "champion": short(self.champion),
            "canary": short(self.canary),
            "previous": short(self.previous),
            "canary_weight": self.canary_weight,
            "shadow": self.shadow,
            "generation": self.generation,
        }
