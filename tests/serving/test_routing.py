"""Sticky, replica-independent canary routing; shadow mode; fault injection."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from freshrec.serving.routing import BUCKETS, bucket_of, in_canary
from tests.serving.conftest import RunningServer, World


def test_bucket_is_stable_across_processes() -> None:
    code = "from freshrec.serving.routing import bucket_of; print(bucket_of('user-42'))"
    seen = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": seed},
                       check=True).stdout.strip()
        for seed in ("1", "2", "random")
    }
    assert seen == {str(bucket_of("user-42"))}
    assert 0 <= bucket_of("user-42") < BUCKETS


@pytest.mark.parametrize("weight", [1.0, 5.0, 25.0, 50.0, 90.0])
def test_canary_share_tracks_the_weight(weight: float) -> None:
    users = [f"user-{n}" for n in range(20_000)]
    share = 100 * sum(in_canary(u, weight) for u in users) / len(users)
    assert abs(share - weight) <= 2.0


def test_weight_increase_only_adds_users() -> None:
    users = [f"user-{n}" for n in range(5_000)]
    at_10 = {u for u in users if in_canary(u, 10)}
    at_30 = {u for u in users if in_canary(u, 30)}
    assert at_10 <= at_30
    assert not any(in_canary(u, 0) for u in users) and all(in_canary(u, 100) for u in users)


@pytest.fixture
def canary(world: World, champion: str) -> str:
    version = world.register("run-2", seed=2)
    world.registry.start_canary(version, 30.0, actor="test", reason="canary test")
    return version


def test_sticky_variants_over_http(world: World, champion: str, canary: str) -> None:
    users = [f"u{n}" for n in range(40)] + [f"new-{n}" for n in range(200)]
    with RunningServer(world.settings) as server, httpx.Client(base_url=server.url) as client:
        first = {}
        for user in users:
            body = client.post("/v1/recommend", json={"user_id": user, "k": 3}).json()
            expected = ("canary", canary) if in_canary(user, 30.0) else ("champion", champion)
            assert (body["variant"], body["model_version"]) == expected
            first[user] = body["variant"]
        for user in users[::7]:
            assert client.post("/v1/recommend", json={"user_id": user, "k": 3}).json()["variant"] == first[user]
        assert {"canary", "champion"} == set(first.values())
        models = client.get("/v1/models").json()
        assert models["canary_weight"] == 30.0
        assert {v["role"]: v["version"] for v in models["versions"]} == {"champion": champion, "canary": canary}


def test_shadow_mode_answers_with_the_champion(world: World, champion: str) -> None:
    version = world.register("run-2", seed=2)
    world.registry.start_canary(version, 100.0, actor="test", reason="shadow", shadow=True)
    with RunningServer(world.settings) as server, httpx.Client(base_url=server.url) as client:
        for n in range(20):
            body = client.post("/v1/recommend", json={"user_id": f"u{n}", "k": 5}).json()
            assert (body["variant"], body["model_version"]) == ("champion", champion)
        metrics = client.get("/metrics").text
    assert f'freshrec_score_count{{variant="shadow",version="{version}"}}' in metrics
    assert f'freshrec_score_count{{variant="champion",version="{champion}"}} 20.0' in metrics


def test_faults_hit_only_the_marked_version(world: World, champion: str, canary: str) -> None:
    world.registry.set_faults(canary, latency_ms=0.0, error_rate=1.0, actor="test", reason="rehearsal")
    users = [f"new-{n}" for n in range(100)]
    with RunningServer(world.settings) as server, httpx.Client(base_url=server.url) as client:
        for user in users:
            status = client.post("/v1/recommend", json={"user_id": user, "k": 3}).status_code
            assert status == (500 if in_canary(user, 30.0) else 200)


def test_faults_ignored_unless_allowed(world: World, champion: str, canary: str, monkeypatch) -> None:
    world.registry.set_faults(canary, latency_ms=0.0, error_rate=1.0, actor="test", reason="rehearsal")
    settings = world.settings.model_copy(update={"allow_fault_injection": False})
    with RunningServer(settings) as server, httpx.Client(base_url=server.url) as client:
        statuses = {client.post("/v1/recommend", json={"user_id": f"new-{n}", "k": 3}).status_code for n in range(50)}
    assert statuses == {200}
