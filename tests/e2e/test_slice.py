"""End-to-end slice through every stage, driven only through the public CLI and HTTP API:
synth -> features (Spark + GX via the features_daily DAG) -> retrain (torch -> ONNX int8 -> registry)
-> champion -> `freshrec serve` answering /v1/recommend with ONNX Runtime; then a backfill of a past day
while that server runs leaves what it serves unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.net import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _cli(env: dict, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "freshrec"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"freshrec {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("e2e-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRESHREC_", "AIRFLOW"))}
    env.update(
        FRESHREC_HOME=str(home),
        FRESHREC_SPARK_MASTER="local[2]",
        FRESHREC_TRAINING__TEACHER_EPOCHS="2",
        FRESHREC_TRAINING__STUDENT_EPOCHS="2",
        FRESHREC_TRAINING__HOLDOUT_DAYS="1",
        FRESHREC_ADMIN_TOKEN="e2e-token",
        FRESHREC_SERVING__RECONCILE_INTERVAL_S="0.5",
        PATH=f"{BIN}:{os.environ['PATH']}",
    )
    return env


def test_slice_end_to_end(stack_env: dict) -> None:
    home = Path(stack_env["FRESHREC_HOME"])
    events = home / "lake" / "raw" / "events"
    _cli(stack_env, "data", "synth", "--out", str(events), "--start", "2026-03-01", "--days", "4",
         "--users", "300", "--items", "150", "--events-per-day", "3000", "--seed", "11")
    assert len(list(events.glob("ds=*"))) == 4

    log = home / "logs" / "pipeline.log"
    ran = _cli(stack_env, "pipeline", "run", "--stages", "features,retrain", "--log", str(log))
    # The terminal gets a line per stage (what `make up` shows); Airflow's task logs and Spark go to the file.
    shown = (ran.stdout + ran.stderr).splitlines()
    assert len(shown) <= 8 and "pipeline done" in ran.stdout and "done in" in ran.stdout, shown
    assert "[DAG TEST]" in log.read_text() and "[DAG TEST]" not in ran.stdout + ran.stderr
    manifests = sorted((home / "lake" / "features").glob("ds=*/_manifest.json"))
    assert len(manifests) == 4
    manifest = json.loads(manifests[-1].read_text())
    assert manifest["input_rows"] == manifest["valid_rows"] + manifest["quarantined_rows"] + manifest["duplicate_rows"]

    versions = json.loads(_cli(stack_env, "registry", "list", "--json").stdout)
    champions = [v for v in versions if v["state"] == "champion"]
    assert len(champions) == 1, versions

    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "freshrec"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=stack_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.5)
        else:
            pytest.fail("server never became ready")

        users = _known_users(home)
        body = httpx.post(f"{base}/v1/recommend", json={"user_id": users[0], "k": 10, "exclude_seen": True}).json()
        assert body["user_id"] == users[0]
        assert body["model_version"] == champions[0]["version"]
        assert body["variant"] == "champion"
        assert len(body["items"]) == 10
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True)

        cold = httpx.post(f"{base}/v1/recommend", json={"user_id": "nobody-ever", "k": 5}).json()
        assert len(cold["items"]) == 5

        bad = httpx.post(f"{base}/v1/recommend", json={"user_id": "1", "k": 0})
        assert bad.status_code == 422 and "k" in bad.text

        _backfill_leaves_serving_unchanged(stack_env, base, users[:100])
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(base: str, users: list[str]) -> list[dict]:
    return [httpx.post(f"{base}/v1/recommend", json={"user_id": u, "k": 10, "exclude_seen": True}).raise_for_status().json()
            for u in users]


def _backfill_leaves_serving_unchanged(env: dict, base: str, users: list[str]) -> None:
    """Re-running a past day republishes its partitions and builds a snapshot as of that day; serving must not
    go back in time to it: the same answers for the same users before and after, several reconcile passes later."""
    home = Path(env["FRESHREC_HOME"])
    online = home / "lake" / "online"
    current = (online / "CURRENT").read_text().strip()
    before = _answers(base, users)
    _cli(env, "pipeline", "run", "--stages", "features", "--from", "2026-03-02", "--to", "2026-03-02",
         "--log", str(home / "logs" / "backfill.log"))
    assert len(list(online.glob("*"))) > 2, "the backfill built no snapshot of its own"  # CURRENT + live + the backfill's
    assert (online / "CURRENT").read_text().strip() == current
    time.sleep(2.0)  # four reconcile passes: a server that follows the newest-built snapshot would have switched
    after = _answers(base, users)
    assert len(users) >= 50 and after == before


def _known_users(home: Path) -> list[str]:
    import pyarrow.parquet as pq

    online = home / "lake" / "online"
    snapshot = online / (online / "CURRENT").read_text().strip()
    return pq.read_table(snapshot / "users.parquet", columns=["user_id"]).column("user_id").to_pylist()
