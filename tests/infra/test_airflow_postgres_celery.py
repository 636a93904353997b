"""The production Airflow shape, run for real here: `airflow db migrate` on the local Postgres, then a
scheduler, DAG processor, API server and a Celery worker (Redis broker) backfill features_daily for a tiny day.

Uses a database created for the test (and dropped after) and a private Celery queue, so nothing else
on the shared Postgres/Redis is touched.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.infra.stack import REPO, free_port

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BIN = REPO / ".venv" / "bin"
DAY = dt.date.today() - dt.timedelta(days=3)

# Spark and four Airflow components on a small machine: minutes, not the default 15.
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(1800)]


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture
def airflow_database() -> Iterator[str]:
    if not postgres_available():
        pytest.fail("no Postgres at 127.0.0.1:5432: these tests need the local server (it runs on the dev and CI machines)")
    name = f"freshrec_airflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def production_env(home: Path, database: str, queue: str, api_port: int) -> dict[str, str]:
    from freshrec.core.settings import load_settings
    from freshrec.dags._local import airflow_environment

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FRESHREC_"))}
    env.update(airflow_environment(load_settings(home=home)))
    pg = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    env.update(
        FRESHREC_HOME=str(home),
        FRESHREC_SPARK_DRIVER_MEMORY="1g",
        PATH=f"{BIN}:{env.get('PATH', '')}",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg,
        # Airflow derives the async URL as postgresql+asyncpg unless told; psycopg 3 does async too.
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=pg,
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL="redis://127.0.0.1:6379/0",
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+{pg}",
        # A private queue: other Celery workers on this Redis never see our tasks, nor we theirs.
        AIRFLOW__OPERATORS__DEFAULT_QUEUE=queue,
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET=uuid.uuid4().hex,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="10",
        AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    return env


def query(database: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as conn:
        return conn.execute(sql, params).fetchall()


def wait_until(predicate, timeout: float, what: str, processes: dict[str, subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        dead = {n: p.returncode for n, p in processes.items() if p.poll() is not None}
        assert not dead, f"Airflow components exited while waiting for {what}: {dead}"
        time.sleep(5)
    raise TimeoutError(f"{what} not reached within {timeout}s")


def test_celery_executor_on_postgres_runs_features_daily(airflow_database: str, tmp_path: Path) -> None:
    home, logs = tmp_path / "home", tmp_path / "logs"
    logs.mkdir()
    queue = f"freshrec-test-{uuid.uuid4().hex[:8]}"
    env = production_env(home, airflow_database, queue, free_port())

    synth = subprocess.run(
        [str(BIN / "freshrec"), "data", "synth", "--out", str(home / "lake" / "raw" / "events"), "--start",
         (DAY - dt.timedelta(days=1)).isoformat(), "--days", "2", "--users", "60", "--items", "40",
         "--events-per-day", "400", "--seed", "5", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert synth.returncode == 0, synth.stderr

    migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    tables = {r[0] for r in query(airflow_database, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert {"dag_run", "task_instance", "backfill", "alembic_version"} <= tables

    commands = {
        "api-server": ["api-server"],
        "scheduler": ["scheduler"],
        "dag-processor": ["dag-processor"],
        "celery-worker": ["celery", "worker", "--queues", queue, "--concurrency", "2", "--without-mingle", "--without-gossip"],
    }
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name, args in commands.items():
            log = open(logs / f"{name}.log", "w")
            processes[name] = subprocess.Popen([str(BIN / "airflow"), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True)
        wait_until(lambda: query(airflow_database, "SELECT 1 FROM dag WHERE dag_id = 'features_daily'"), 600,
                   "features_daily parsed into Postgres", processes)
        # Unpausing also schedules the latest interval (today, no data: its sensor waits); a backfill's
        # runs have their own concurrency, so the day below runs through Celery regardless.
        for args in (["dags", "unpause", "features_daily"],
                     ["backfill", "create", "--dag-id", "features_daily", "--from-date", DAY.isoformat(), "--to-date", DAY.isoformat()]):
            result = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stdout + result.stderr

        def finished() -> bool:
            rows = query(airflow_database, "SELECT state FROM dag_run WHERE dag_id = 'features_daily' AND run_type = 'backfill'")
            states = {r[0] for r in rows}
            return bool(states) and states <= {"success", "failed"}

        wait_until(finished, 1200, "the features_daily run finishing", processes)
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    [(state,)] = query(airflow_database, "SELECT state FROM dag_run WHERE dag_id = 'features_daily' AND run_type = 'backfill'")
    tis = query(airflow_database, "SELECT ti.task_id, ti.state, ti.queue, ti.executor FROM task_instance ti JOIN dag_run dr "
                                  "ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id WHERE dr.run_type = 'backfill'")
    assert state == "success", tis
    ran = [t for t in tis if t[1] == "success"]
    assert ran and all(t[2] == queue for t in ran), f"tasks did not go through the Celery queue: {tis}"
    worker_log = (logs / "celery-worker.log").read_text()
    assert "execute_workload" in worker_log or "succeeded" in worker_log, worker_log[-3000:]
    manifest = home / "lake" / "features" / f"ds={DAY.isoformat()}" / "_manifest.json"
    assert manifest.is_file(), "the run did not publish the day's features"
