"""Run FreshRec's DAGs in-process (``dag.test``) against FRESHREC_HOME, without a scheduler.

Used by ``freshrec pipeline run``, ``freshrec release run`` and the tests. Airflow reads AIRFLOW_HOME at
import time, so :func:`configure_airflow` must run before anything imports airflow; an AIRFLOW_HOME the
caller already set (tests, a user's own Airflow) is respected.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from freshrec.core.errors import ConfigError, NotFound
from freshrec.core.layout import Layout
from freshrec.core.settings import Settings, get_settings

DAGS_FOLDER = Path(__file__).resolve().parent
_MIGRATED_MARKER = ".freshrec-db-migrated"


def airflow_environment(settings: Settings) -> dict[str, str]:
    """Environment for a local Airflow bound to this checkout's DAGs and FRESHREC_HOME."""
    return {
        "AIRFLOW_HOME": str(Layout(settings.home).airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Spark through the provider's connection: local by default, a cluster is a connection change.
        "AIRFLOW_CONN_SPARK_DEFAULT": os.environ.get("AIRFLOW_CONN_SPARK_DEFAULT", _spark_connection(settings.spark_master)),
    }


def _spark_connection(master: str) -> str:
    """``spark_default`` as a JSON connection for the given master (local[*], spark://, yarn, k8s://...)."""
    import json

    if master.startswith(("spark://", "k8s://", "sc://")):
        scheme, rest = master.split("://", 1)
        host = f"{scheme}://{rest.split(':')[0]}"
        port = int(rest.split(":")[1]) if ":" in rest else None
        return json.dumps({"conn_type": "spark", "host": host, **({"port": port} if port else {})})
    return json.dumps({"conn_type": "spark", "host": master})


def configure_airflow(settings: Settings | None = None) -> Path:
    """Point this process's Airflow at FRESHREC_HOME (keeping values the caller set) and return AIRFLOW_HOME."""
    settings = settings or get_settings()
    for key, value in airflow_environment(settings).items():
        os.environ.setdefault(key, value)
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    return home


def ensure_airflow_db(settings: Settings | None = None) -> Path:
    """Migrate the Airflow metadata DB once per Airflow version (``airflow db migrate``)."""
    home = configure_airflow(settings)
    from importlib.metadata import version

    marker = home / f"{_MIGRATED_MARKER}-{version('apache-airflow')}"
    if not marker.exists():
        airflow_bin = Path(sys.executable).with_name("airflow")
        result = subprocess.run([str(airflow_bin), "db", "migrate"], env=os.environ.copy(), capture_output=True, text=True)
        if result.returncode != 0:
            raise ConfigError(f"`airflow db migrate` failed in {home}:\n{result.stderr[-2000:]}")
        marker.touch()
    return home


def load_dag(dag_id: str):
    """Parse the DAGs folder and return one DAG, failing loudly on import errors."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    dag = bag.dags.get(dag_id)
    if dag is None:
        errors = {Path(k).name: v.splitlines()[-1] for k, v in bag.import_errors.items()}
        raise NotFound(f"DAG {dag_id!r} not found in {DAGS_FOLDER}" + (f"; import errors: {errors}" if errors else ""))
    return dag


def run_dag(dag_id: str, conf: dict | None = None, logical_date: dt.datetime | None = None) -> str:
    """Run one DAG in-process with ``dag.test`` and return the final DagRun state ("success"/"failed")."""
    ensure_airflow_db()
    dag = load_dag(dag_id)
    kwargs: dict = {"run_conf": conf or {}}
    if logical_date is not None:
        kwargs["logical_date"] = logical_date
    dag_run = dag.test(**kwargs)
    return str(dag_run.state)
