"""Backfills against the running local stack: REST (`POST /api/v2/backfills`) and the `airflow backfill
create` CLI end in successful runs and produce identical feature partitions."""

from __future__ import annotations

import pytest

from freshrec.core.layout import Layout
from tests.infra.backfills import DAG, midnight, partition_fingerprint, post_with_retry, wait_backfill
from tests.infra.stack import DAYS, LocalStack


@pytest.mark.slow
@pytest.mark.timeout(3600)  # starts a stack, then one Spark run per backfilled day
def test_rest_and_cli_backfills_produce_identical_partitions(local_stack: LocalStack) -> None:
    layout = Layout(local_stack.home)
    with local_stack.api() as api:
        dags = api.get("/dags", params={"limit": 100}).raise_for_status().json()["dags"]
        assert DAG in {d["dag_id"] for d in dags}
        assert api.get("/importErrors").raise_for_status().json()["total_entries"] == 0
        created = post_with_retry(api, "/backfills", {
            "dag_id": DAG, "from_date": midnight(DAYS[0]), "to_date": midnight(DAYS[-1]),
            "reprocess_behavior": "none", "max_active_runs": 1,
        })
    assert created.status_code == 200, created.text
    runs = wait_backfill(local_stack, created.json()["id"])
    assert sorted(r["logical_date"][:10] for r in runs) == [d.isoformat() for d in DAYS], runs
    assert [r["state"] for r in runs] == ["success"] * len(DAYS), [(r["dag_run_id"], r["state"]) for r in runs]
    assert set(DAYS) <= set(layout.feature_days())
    before = {d: partition_fingerprint(layout.features_partition(d)) for d in DAYS}
    assert all(before[d] for d in DAYS), "published partitions hold no feature tables"

    # The same day again through the CLI (reprocessing a completed run) must reproduce it exactly.
    again = DAYS[1]
    cli = local_stack.airflow_cli("backfill", "create", "--dag-id", DAG, "--from-date", again.isoformat(),
                                  "--to-date", again.isoformat(), "--reprocess-behavior", "completed")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    with local_stack.api() as api:
        backfills = api.get("/backfills", params={"dag_id": DAG}).raise_for_status().json()["backfills"]
    latest = max(backfills, key=lambda b: b["id"])
    assert latest["id"] != created.json()["id"]
    reruns = wait_backfill(local_stack, latest["id"])
    assert [r["state"] for r in reruns if r["logical_date"][:10] == again.isoformat()][-1:] == ["success"], reruns
    assert partition_fingerprint(layout.features_partition(again)) == before[again]
