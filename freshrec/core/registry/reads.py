"""ORM rows -> frozen views (the only place that knows both shapes)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import selectinload

from freshrec.core.registry.models import Version
from freshrec.core.registry.views import ArtifactView, VersionView

# Everything a VersionView shows, loaded in one round trip per relationship.
VERSION_LOADS = (
    selectinload(Version.artifacts),
    selectinload(Version.metrics),
    selectinload(Version.lineage),
    selectinload(Version.verdicts),
)


def version_view(row: Version, model_name: str) -> VersionView:
    lineage: dict[str, Any] = {}
    if row.lineage is not None:
        lin = row.lineage
        lineage = {
            "feature_days": lin.feature_days, "feature_manifests": lin.feature_manifests,
            "code_version": lin.code_version, "dag_run_id": lin.dag_run_id, "parent_version": lin.parent_version,
            **lin.extra,
        }
    return VersionView(
        version=row.version,
        state=row.state,
        bundle_dir=row.bundle_dir,
        artifacts={a.variant: ArtifactView(a.uri, a.sha256, a.size, a.variant) for a in row.artifacts},
        metrics={m.name: m.value for m in row.metrics},
        lineage=lineage,
        faults=dict(row.faults or {}),
        verdicts=[{"at": v.at.isoformat(), "actor": v.actor, "outcome": v.outcome, "verdict": v.verdict} for v in row.verdicts],
        created_at=row.created_at,
        reasons=list(row.reasons or []),
        evidence=dict(row.evidence or {}),
        card=dict(row.card or {}),
        created_by=row.created_by,
        updated_at=row.updated_at,
        model=model_name,
    )
