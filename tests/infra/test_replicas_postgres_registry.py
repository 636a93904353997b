"""Two `freshrec serve` replicas sharing one Postgres registry converge on a promotion and agree on the
canary split (the production shape behind a load balancer: no affinity needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest

from tests.infra.stack import REPO, free_port
from tests.serving.builders import write_bundle, write_snapshot

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
RECONCILE_S = 0.5
N_ITEMS, N_USERS = 60, 200

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def registry_url() -> Iterator[str]:
    try:
        conn = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        pytest.fail("no Postgres at 127.0.0.1:5432: these tests need the local server (it runs on the dev and CI machines)")
    name = f"freshrec_registry_{uuid.uuid4().hex[:10]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def replica_env(home: Path, registry_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FRESHREC_"))}
    env.update(
        FRESHREC_HOME=str(home),
        FRESHREC_REGISTRY_URL=registry_url,
        FRESHREC_SERVING__PORT=str(port),
        FRESHREC_SERVING__RECONCILE_INTERVAL_S=str(RECONCILE_S),
        FRESHREC_SERVING__CACHE_TTL_S="0",
        FRESHREC_LOG_LEVEL="WARNING",
    )
    return env


def settled_models(url: str) -> dict | None:
    """/v1/models of a replica once every worker behind its port has applied the same registry state.

    A replica runs one worker per core by default; each polls the registry on its own, and the worker
    that answers /v1/models may be ahead of the one that answers the next request. The replica has
    converged when the lowest generation among its workers is the one the answering worker serves."""
    try:
        models = httpx.get(f"{url}/v1/models", timeout=5).json()
    except httpx.HTTPError:
        return None
    if models["generation"] != models.get("worker_generation", models["generation"]):
        return None
    return models


def champion_of(url: str) -> str | None:
    models = settled_models(url)
    if models is None:
        return None
    return next((v["version"] for v in models["versions"] if v["role"] == "champion"), None)


def wait_for(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"{what} not within {timeout}s")


def test_two_replicas_converge_on_a_promotion(registry_url: str, tmp_path: Path, artifacts_dir: Path) -> None:
    from freshrec.core.layout import Layout
    from freshrec.core.registry import open_registry
    from freshrec.core.settings import load_settings

    home = tmp_path / "home"
    settings = load_settings(home=home, registry_url=registry_url)
    rng = np.random.default_rng(3)
    items = [f"i{n}" for n in range(1, N_ITEMS + 1)]
    users = {f"u{n}": [items[j] for j in rng.choice(N_ITEMS, size=5, replace=False)] for n in range(N_USERS)}
    write_snapshot(Layout(home).online, "snap-1", users, {it: float(N_ITEMS - n) for n, it in enumerate(items)})
    registry = open_registry(settings)

    def register(run: str, seed: int) -> str:
        bundle = home / "models" / run
        view = registry.register_candidate(bundle, write_bundle(bundle, items, seed), {"ndcg_at_10": 0.3}, {}, {}, actor="test")
        return str(view.version)

    first = register("run-1", 1)
    registry.promote(first, actor="test", reason="first champion")

    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    logs = [open(tmp_path / f"replica-{i}.log", "w") for i in range(2)]
    replicas = [
        subprocess.Popen([str(REPO / ".venv" / "bin" / "freshrec"), "serve", "--port", str(port)],
                         env=replica_env(home, registry_url, port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for port, log in zip(ports, logs)
    ]
    try:
        for i, (url, replica) in enumerate(zip(urls, replicas)):
            wait_for(lambda replica=replica, url=url: replica.poll() is not None or _ready(url), 180, f"{url} ready")
            assert replica.poll() is None, (tmp_path / f"replica-{i}.log").read_text()[-3000:]
        wait_for(lambda: all(champion_of(u) == first for u in urls), 60, "both replicas on the first champion")

        second = register("run-2", 2)
        registry.promote(second, actor="test", reason="fresher model")
        converged_s = wait_for(lambda: all(champion_of(u) == second for u in urls), 30, "both replicas on the new champion")
        # Each replica polls the registry on its own: convergence takes about one reconcile interval.
        assert converged_s < 10 * RECONCILE_S + 5
        for url in urls:
            answer = httpx.post(f"{url}/v1/recommend", json={"user_id": "u1", "k": 5}, timeout=10).json()
            assert answer["model_version"] == second and len(answer["items"]) == 5

        canary = register("run-3", 3)
        registry.start_canary(canary, 50.0, actor="test", reason="split check")
        wait_for(lambda: all((settled_models(u) or {}).get("canary_weight") == 50.0 for u in urls), 30,
                 "both replicas on the canary weight")
        variants = [
            [httpx.post(f"{url}/v1/recommend", json={"user_id": f"u{n}", "k": 3}, timeout=10).json()["variant"] for n in range(40)]
            for url in urls
        ]
        assert variants[0] == variants[1], "replicas must route a user to the same variant (sticky hash split)"
        assert {"champion", "canary"} <= set(variants[0])
    finally:
        for replica in replicas:
            if replica.poll() is None:
                os.killpg(replica.pid, signal.SIGTERM)
        for replica in replicas:
            try:
                replica.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(replica.pid, signal.SIGKILL)
                replica.wait()
        for log in logs:
            log.close()
    (artifacts_dir / "convergence.json").write_text(json.dumps({"replicas": 2, "reconcile_interval_s": RECONCILE_S,
                                                                "promotion_converged_s": round(converged_s, 3)}))


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
