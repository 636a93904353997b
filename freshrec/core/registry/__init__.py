"""The FreshRec model registry (SQLAlchemy; SQLite by default, any SQLAlchemy URL, Postgres in production).

    from freshrec.core.registry import open_registry
    reg = open_registry(settings)
    v = reg.register_candidate(bundle_dir, {"fp32": path, "int8": path}, metrics, lineage, card, actor="retrain")
    reg.promote(v.version, actor="release", reason="canary healthy")
    reg.serving_state()  # champion / canary / previous, canary weight, shadow, generation
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freshrec.core.registry.database import make_engine, upgrade
from freshrec.core.registry.integrity import sha256_file, verify_artifact
from freshrec.core.registry.store import Registry, default_actor, parse_version
from freshrec.core.registry.views import TRANSITIONS, ArtifactView, AuditEntry, ServingState, State, VersionView

if TYPE_CHECKING:
    from freshrec.core.settings import Settings


def open_registry(settings: Settings | None = None, *, url: str | None = None, migrate: bool = True) -> Registry:
    """Open the registry at ``url`` (default ``settings.effective_registry_url``), migrating it to head.

    Pass ``migrate=False`` where a deployment runs migrations separately (the schema must be at head).
    """
    if settings is None:
        from freshrec.core.settings import get_settings

        settings = get_settings()
    engine = make_engine(url or settings.effective_registry_url)
    if migrate:
        upgrade(engine)
    return Registry(engine, settings.model_name)


__all__ = [
    "TRANSITIONS",
    "ArtifactView",
    "AuditEntry",
    "Registry",
    "ServingState",
    "State",
    "VersionView",
    "default_actor",
    "open_registry",
    "parse_version",
    "sha256_file",
    "verify_artifact",
]
