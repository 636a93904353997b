"""Backfill helpers over the Airflow REST API of a running stack, and partition fingerprints."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import httpx
import pyarrow.dataset as pads

from tests.infra.stack import LocalStack

DAG = "features_daily"


def midnight(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def post_with_retry(api: httpx.Client, path: str, body: dict, attempts: int = 3) -> httpx.Response:
    """POST, retrying a 503 (SQLite answers "Database is locked" when a writer holds it too long)."""
    for _ in range(attempts - 1):
        response = api.post(path, json=body)
        if response.status_code != 503:
            return response
        time.sleep(10)
    return api.post(path, json=body)


def wait_backfill(stack: LocalStack, backfill_id: int, timeout: float = 2400) -> list[dict]:
    """Wait until the backfill completes; return its DAG runs."""
    deadline = time.monotonic() + timeout
    with stack.api() as api:
        while time.monotonic() < deadline:
            backfill = api.get(f"/backfills/{backfill_id}").raise_for_status().json()
            if backfill["completed_at"]:
                break
            time.sleep(10)
        else:
            raise TimeoutError(f"backfill {backfill_id} not complete within {timeout}s")
        runs = api.get(f"/dags/{DAG}/dagRuns", params={"run_type": "backfill", "limit": 100}).raise_for_status().json()
    # A DAG run in the REST API does not name its backfill: match on the backfill's date window.
    return [r for r in runs["dag_runs"] if backfill["from_date"][:10] <= (r.get("logical_date") or "")[:10] <= backfill["to_date"][:10]]


def partition_fingerprint(partition: Path) -> dict[str, str]:
    """Order-independent content hash of every feature table in a published day partition."""
    prints = {}
    for table in sorted(p for p in partition.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        rows = pads.dataset(table, format="parquet").to_table().to_pylist()
        lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
        prints[table.name] = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return prints
