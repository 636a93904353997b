"""The `slo_monitor` DAG through dag.test against a real `freshrec serve` under load: it stores
snapshots, sees a slow canary burn its budget and rolls it back, and triggers `retrain` for a stale model."""

from __future__ import annotations

import time

import httpx
import pytest

from freshrec.core.registry import State
from tests.release.stack import ADMIN_TOKEN, Load, release_world, serving  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def test_slo_monitor_rolls_back_a_burning_canary_and_asks_for_retrain(airflow_db, release_world, serving,
                                                                      monkeypatch):
    from freshrec.core.settings import get_settings
    from freshrec.dags._local import run_dag
    from freshrec.pipeline.monitoring import store

    monkeypatch.setenv("FRESHREC_MONITORING__MAX_MODEL_AGE_H", "0.0001")  # every model is stale
    get_settings.cache_clear()
    world = release_world
    version = world.register("run-2", seed=2)
    world.registry.set_faults(version, latency_ms=40, actor="test")
    world.registry.start_canary(version, 50, actor="test", reason="monitor test")
    httpx.post(f"{serving}/admin/reconcile", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)

    with Load(serving, world.users) as load:
        assert run_dag("slo_monitor", {}) == "success"  # first snapshot: nothing to compare yet
        assert world.registry.get_version(version).state == State.CANARY
        time.sleep(2)
        assert run_dag("slo_monitor", {}) == "success"
    assert load.status[200] > 0

    view = world.registry.get_version(version)
    assert view.state == State.REJECTED
    assert any("slo_monitor: canary latency burn" in r for r in view.reasons), view.reasons

    history = store.status_log(store.open_store(get_settings()))
    assert len(history) == 2
    latest = history[0]
    assert latest["canary"]["burning"] is True
    assert latest["retrain_reasons"] and latest["retrain_reasons"][0].startswith("model age")

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == "retrain")).all()
    assert [r.run_id for r in runs if r.run_id.startswith("slo_monitor__")], [r.run_id for r in runs]
