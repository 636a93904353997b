"""The `release` DAG through dag.test against a real `freshrec serve`: promotion, rollback (via the
CLI, as the acceptance runs it) and the human-in-the-loop approval path."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from freshrec.core.registry import State
from freshrec.core.release_status import read_release_status
from tests.release.stack import Load, release_world, serving  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def test_release_dag_promotes_a_healthy_canary(airflow_db, release_world, serving):
    from freshrec.dags._local import run_dag

    world = release_world
    version = world.register("run-2", seed=2)
    with Load(serving, world.users) as load:
        state = run_dag("release", {"version": version, "steps": [50, 100], "interval_s": 2, "min_requests": 30})
    assert state == "success"
    view = world.registry.get_version(version)
    assert view.state == State.CHAMPION
    verdict = view.verdicts[-1]
    body = verdict.get("verdict", verdict)
    assert body["verdict"] == "promoted"
    assert body["preflight"]["offline_latency"]["p99_ms"] > 0
    assert [a["weight"] for a in body["analyses"] if a["outcome"] == "pass"] == [50, 100]
    assert load.failures == []
    # What the /canary page shows: the release tasks recorded every window and the outcome.
    status = read_release_status(world.home)
    [recorded] = status.history
    assert status.current is None and (recorded.version, recorded.state) == (version, "promoted")
    assert [(w.weight, w.outcome) for w in recorded.windows if w.outcome == "pass"] == [(50, "pass"), (100, "pass")]


def test_release_cli_rolls_back_a_slow_canary(airflow_db, release_world, serving):
    world = release_world
    version = world.register("run-2", seed=2)
    cli = str(Path(sys.executable).with_name("freshrec"))
    with Load(serving, world.users) as load:
        proc = subprocess.run([cli, "release", "run", version, "--fault-latency-ms", "40", "--interval", "2",
                               "--steps", "50,100", "--min-requests", "30"],
                              env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 8, proc.stdout[-2000:] + proc.stderr[-3000:]
    view = world.registry.get_version(version)
    assert view.state == State.REJECTED
    assert any("p99_latency" in r for r in view.reasons), view.reasons
    shown = subprocess.run([cli, "registry", "show", version, "--json"], env=os.environ.copy(),
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and '"rejected"' in shown.stdout
    assert load.failures == []


def _respond(option: str, user: str) -> bool:
    """What the Required Actions UI (PUT .../hitlDetails) does: record the answer and resume the task."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == "release", TaskInstance.task_id == "approval",
            TaskInstance.state == TaskInstanceState.AWAITING_INPUT)).first()
        if ti is None:
            return False
        detail = session.scalars(select(HITLDetail).where(HITLDetail.ti_id == ti.id)).one()
        detail.responded_by = {"id": user, "name": user}
        detail.responded_at = timezone.utcnow()
        detail.chosen_options = [option]
        detail.params_input = {}
        handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
    return True


def test_inconclusive_canary_waits_for_approval_then_promotes(airflow_db, release_world, serving):
    from freshrec.dags._local import run_dag

    world = release_world
    version = world.register("run-2", seed=2)
    answered = threading.Event()
    errors: list[str] = []

    def approver() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not answered.is_set():
            try:
                if _respond("Promote", "reviewer"):
                    answered.set()
                    return
            except Exception as exc:  # noqa: BLE001 - a locked SQLite DB: try again
                errors.append(repr(exc))
            time.sleep(0.5)

    # Import Airflow's models in this thread first: two threads importing them at once deadlock.
    from freshrec.dags._local import ensure_airflow_db, load_dag

    ensure_airflow_db()
    load_dag("release")
    assert not _respond("Promote", "reviewer")  # nothing is waiting yet
    thread = threading.Thread(target=approver, daemon=True)
    thread.start()
    # No traffic at all: the canary can only be inconclusive.
    state = run_dag("release", {"version": version, "steps": [5, 100], "interval_s": 1, "require_approval": True})
    thread.join(timeout=5)
    assert answered.is_set(), f"the release never asked for approval {errors[-3:]}"
    assert state == "success"
    view = world.registry.get_version(version)
    assert view.state == State.CHAMPION
    body = view.verdicts[-1].get("verdict", view.verdicts[-1])
    assert body["approval"]["responded_by_user"]["name"] == "reviewer"
    assert [a["outcome"] for a in body["analyses"]] == ["inconclusive", "inconclusive"]
