"""Plan one retrain run: its folder, the warm-start parent, and whether there is anything new."""

from __future__ import annotations

import datetime as dt
import hashlib

from freshrec.core.layout import Layout
from freshrec.core.settings import Settings


def run_id(dag_run_id: str, now: dt.datetime | None = None) -> str:
    """A folder-safe, sortable id: UTC time plus a hash of the DAG run id."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%S}-{hashlib.sha1(dag_run_id.encode()).hexdigest()[:6]}"


def latest_event_day(layout: Layout) -> str | None:
    """The newest ``ds=`` partition of clean events (what a run trains on), as YYYY-MM-DD."""
    root = layout.clean_events
    days = sorted(p.name[3:] for p in root.iterdir() if p.is_dir() and p.name.startswith("ds=")) if root.is_dir() else []
    return days[-1] if days else None


def plan_run(settings: Settings, params: dict, dag_run_id: str, run_type: str = "manual") -> dict:
    """{"run_dir", "dag_run_id", "champion_bundle", "parent_bundle", "parent_version"} or {"skip": why}.

    ``params["force"]`` empty: a run someone asked for (Airflow run type ``manual``: the UI, the REST API, the
    CLI, slo_monitor's trigger) retrains; scheduled and asset-triggered runs skip when the champion already
    covers the newest feature day."""
    from freshrec.core.registry import open_registry

    force = params.get("force")
    if force is None:
        force = run_type == "manual"
    layout = Layout(settings.home)
    with open_registry(settings) as registry:
        champion = registry.serving_state().champion
    latest_day = latest_event_day(layout)
    if champion is not None and latest_day is not None and not force:
        if champion.lineage.get("events_through") == latest_day:
            return {"skip": f"champion v{champion.version} was trained on events through {latest_day} already "
                            "(set force to retrain on the same data)"}
    run_dir = layout.models / run_id(dag_run_id)
    run_dir.mkdir(parents=True, exist_ok=False)
    parent = champion if params.get("warm_start", True) else None
    return {
        "run_dir": str(run_dir),
        "dag_run_id": dag_run_id,
        "champion_bundle": champion.bundle_dir if champion else None,
        "parent_bundle": parent.bundle_dir if parent else None,
        "parent_version": str(parent.version) if parent else None,
    }
