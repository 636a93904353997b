"""Overload sheds with 503 + Retry-After (and keeps serving); the metrics exposition parses."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.builders import served_variant
from tests.serving.conftest import RunningServer, World, free_port


def test_overload_answers_503_with_retry_after(world: World, champion: str) -> None:
    settings = world.settings.model_copy(
        update={"serving": world.settings.serving.model_copy(update={"max_queue": 2, "max_batch": 1})}
    )

    async def burst(url: str) -> Counter:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            async def one(n: int) -> tuple[int, str | None]:
                r = await client.post("/v1/recommend", json={"user_id": f"u{n % 40}", "k": 5})
                return r.status_code, r.headers.get("retry-after")

            results = []
            for _ in range(5):
                results += await asyncio.gather(*(one(n) for n in range(64)))
            return Counter(results)

    with RunningServer(settings) as server:
        outcomes = asyncio.run(burst(server.url))
        assert set(outcomes) <= {(200, None), (503, "1")}, outcomes
        assert outcomes[(503, "1")] > 0 and outcomes[(200, None)] > 0, outcomes
        # still healthy and answering afterwards
        assert httpx.post(f"{server.url}/v1/recommend", json={"user_id": "u1"}).status_code == 200
        errors = _samples(httpx.get(f"{server.url}/metrics").text, "freshrec_request_errors_total")
        assert sum(errors.values()) == outcomes[(503, "1")]


def _recommend_as_a_client(url: str, body: dict) -> httpx.Response:
    """A request shed with 503 + Retry-After (a loaded CI box can lag the loop) is sent again, as a client would;
    a shed request is answered before routing, so it counts under no variant and the figures below stay exact."""
    deadline = time.monotonic() + 30
    while (response := httpx.post(f"{url}/v1/recommend", json=body)).status_code == 503 and time.monotonic() < deadline:
        assert "retry-after" in response.headers, response.text
        time.sleep(float(response.headers["retry-after"]))
    return response


def test_metrics_exposition(server, world: World, champion: str) -> None:
    for n in range(30):
        assert _recommend_as_a_client(server.url, {"user_id": f"u{n}", "k": 5}).status_code == 200
    httpx.post(f"{server.url}/v1/recommend", json={"user_id": "u1", "k": 0})
    text = httpx.get(f"{server.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    latency = families["freshrec_request_latency_seconds"]
    buckets = {s.labels["le"] for s in latency.samples if s.name.endswith("_bucket")}
    assert {"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1"} <= buckets  # 0.01 = the SLO
    count = _samples(text, "freshrec_request_latency_seconds_count")
    assert count[(("route", "recommend"), ("variant", "champion"), ("version", champion))] == 30
    requests = _samples(text, "freshrec_requests_total")
    assert requests[(("route", "recommend"), ("status", "422"), ("variant", "none"), ("version", "none"))] == 1
    assert _samples(text, "freshrec_impressions_total")[(("variant", "champion"), ("version", champion))] == 30
    assert sum(_samples(text, "freshrec_batch_size_count").values()) >= 1
    assert sum(_samples(text, "freshrec_ort_seconds_count").values()) >= 1
    assert _samples(text, "freshrec_model_loaded")[
        (("artifact", served_variant()[0]), ("provider", served_variant()[1]), ("role", "champion"), ("version", champion))
    ] == 1
    assert _samples(text, "freshrec_model_age_seconds")[(("role", "champion"), ("version", champion))] >= 0
    assert "freshrec_score" in families and "freshrec_queue_depth" in families


def test_result_cache_hits(world: World, champion: str) -> None:
    settings = world.settings.model_copy(
        update={"serving": world.settings.serving.model_copy(update={"cache_ttl_s": 60.0})}
    )
    with RunningServer(settings) as server, httpx.Client(base_url=server.url) as client:
        first = client.post("/v1/recommend", json={"user_id": "u1", "k": 5}).json()
        second = client.post("/v1/recommend", json={"user_id": "u1", "k": 5}).json()
        other_k = client.post("/v1/recommend", json={"user_id": "u1", "k": 6}).json()
        assert first == second and len(other_k["items"]) == 6
        cache = _samples(client.get("/metrics").text, "freshrec_cache_requests_total")
    assert cache[(("result", "hit"),)] == 1 and cache[(("result", "miss"),)] == 2


def test_in_flight_limit_sheds_before_reading_the_body(world: World, champion: str) -> None:
    """Slow requests (an injected 300 ms latency) pile up: past max_queue + max_batch in flight -> 503."""
    world.registry.set_faults(champion, latency_ms=300.0, error_rate=0.0, actor="test", reason="slow")
    settings = world.settings.model_copy(
        update={"serving": world.settings.serving.model_copy(update={"max_queue": 3, "max_batch": 1})}
    )

    async def burst(url: str) -> Counter:
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=20), timeout=30) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/recommend", json={"user_id": f"u{n}", "k": 5}) for n in range(20))
            )
            return Counter((r.status_code, r.headers.get("retry-after")) for r in responses)

    with RunningServer(settings) as server:
        outcomes = asyncio.run(burst(server.url))
        # 4 admitted (max_queue + max_batch); of those, ones waking in the same loop turn can still
        # find the scoring queue full.
        assert set(outcomes) == {(200, None), (503, "1")} and outcomes[(503, "1")] >= 16, outcomes
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.post(f"{server.url}/v1/recommend", json={"user_id": "u1"}).status_code == 200


@pytest.mark.slow
def test_freshrec_serve_with_two_workers_aggregates_metrics(world: World, champion: str) -> None:
    """The real CLI: uvicorn workers, PROMETHEUS_MULTIPROC_DIR set by `freshrec serve`, one /metrics for all."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    server = subprocess.Popen(
        [sys.executable, "-m", "freshrec.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "server never became ready"
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        time.sleep(1.0)  # let the second worker finish its start-up too
        for n in range(40):
            # a fresh connection per request so both workers get traffic
            assert httpx.post(f"{base}/v1/recommend", json={"user_id": f"u{n}", "k": 5}).status_code == 200
        text = httpx.get(f"{base}/metrics").text
        count = _samples(text, "freshrec_request_latency_seconds_count")
        assert count[(("route", "recommend"), ("variant", "champion"), ("version", champion))] == 40
        assert len(list((world.home / "run" / f"prometheus-{port}").glob("*.db"))) >= 2

        # One replica, two workers: /v1/models names both and reports the generation both have applied.
        models = httpx.get(f"{base}/v1/models").json()
        assert len(models["workers"]) == 2 and {w["generation"] for w in models["workers"]} == {models["generation"]}
        new = world.register("run-2", seed=2)
        world.registry.promote(new, actor="test", reason="two-worker convergence")
        target = world.registry.serving_state().generation
        deadline = time.monotonic() + 30
        while (models := httpx.get(f"{base}/v1/models").json())["generation"] < target:
            # a worker that has swapped already may answer, but the replica's generation waits for both
            assert all(w["generation"] >= models["generation"] for w in models["workers"])
            assert time.monotonic() < deadline, models
            time.sleep(0.1)
        assert all(w["generation"] >= target for w in models["workers"])
        assert {v["role"]: v["version"] for v in models["versions"]}["champion"] == new
    finally:
        server.terminate()
        server.wait(timeout=30)


def _samples(exposition: str, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_jobs_past_their_deadline_are_shed(world: World, champion: str) -> None:
    settings = world.settings.model_copy(
        update={"serving": world.settings.serving.model_copy(update={"request_deadline_ms": 0.001})}
    )
    with RunningServer(settings) as server, httpx.Client(base_url=server.url) as client:
        shed = client.post("/v1/recommend", json={"user_id": "u1", "k": 5})
        assert shed.status_code == 503 and shed.headers["retry-after"] == "1" and "deadline" in shed.json()["message"]
        # a cold-start answer needs no scoring, so it is never queued
        assert client.post("/v1/recommend", json={"user_id": "stranger", "k": 5}).status_code == 200
