"""The serving tier's narrow view of the registry: desired state in, alias moves out.

Serving needs four things from the registry (read the desired state; set the canary weight; promote;
roll back), so it depends on this small protocol rather than on the registry's whole API. The SQL
implementation delegates to ``freshrec.core.registry``; calls are blocking and run off the event loop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from freshrec.core.settings import Settings

ADMIN_ACTOR = "serving-admin"


@dataclass(frozen=True)
class DesiredArtifact:
    path: Path
    sha256: str


@dataclass(frozen=True)
class DesiredVersion:
    version: str
    bundle_dir: Path
    artifacts: dict[str, DesiredArtifact]
    faults: dict[str, float] = field(default_factory=dict)
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class DesiredState:
    champion: DesiredVersion | None
    canary: DesiredVersion | None
    previous: DesiredVersion | None
    canary_weight: float
    shadow: bool
    generation: int


class RegistryGateway(Protocol):
    def generation(self) -> int:
        """Cheap change counter: bumps on every alias, weight or fault change."""

    def desired_state(self) -> DesiredState: ...

    def set_canary_weight(self, weight: float, reason: str) -> None: ...

    def promote(self, version: str, reason: str) -> None: ...

    def rollback(self, reason: str) -> None: ...

    def close(self) -> None:
        """Release connections (the server is stopping)."""


def _desired_version(view: Any) -> DesiredVersion | None:
    if view is None:
        return None
    return DesiredVersion(
        version=str(view.version),
        bundle_dir=Path(view.bundle_dir),
        artifacts={name: DesiredArtifact(Path(a.uri), a.sha256) for name, a in view.artifacts.items()},
        faults={k: float(v) for k, v in (view.faults or {}).items() if isinstance(v, (int, float))},
        created_at=view.created_at,
    )


class SqlRegistryGateway:
    """``freshrec.core.registry`` behind the gateway protocol (SQLite by default, Postgres in production)."""

    def __init__(self, settings: Settings) -> None:
        from freshrec.core.registry import open_registry

        self._registry = open_registry(settings)

    def generation(self) -> int:
        return int(self._registry.generation())

    def desired_state(self) -> DesiredState:
        state = self._registry.serving_state()
        return DesiredState(
            champion=_desired_version(state.champion),
            canary=_desired_version(state.canary),
            previous=_desired_version(state.previous),
            canary_weight=float(state.canary_weight),
            shadow=bool(state.shadow),
            generation=int(state.generation),
        )

    def set_canary_weight(self, weight: float, reason: str) -> None:
        self._registry.set_canary_weight(weight, actor=ADMIN_ACTOR, reason=reason)

    def promote(self, version: str, reason: str) -> None:
        self._registry.promote(int(version), actor=ADMIN_ACTOR, reason=reason)

    def rollback(self, reason: str) -> None:
        self._registry.rollback(actor=ADMIN_ACTOR, reason=reason)

    def close(self) -> None:
        self._registry.close()
