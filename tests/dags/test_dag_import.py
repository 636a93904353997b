"""Every DAG file parses with no import errors and carries docs, tags and an owner."""

from __future__ import annotations

import pytest

EXPECTED = {"features_daily", "retrain", "release", "slo_monitor"}


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from freshrec.dags._local import DAGS_FOLDER

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_all_dags_present(dagbag) -> None:
    assert EXPECTED <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_is_documented(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag_id} needs doc_md"
    assert dag.tags, f"{dag_id} needs tags"
    for task in dag.tasks:
        assert task.doc_md, f"{dag_id}.{task.task_id} needs doc_md"
        assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} needs an owner"
