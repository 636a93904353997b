"""A worker claims a registry generation in GET /v1/models only once it serves that generation's champion and
canary, and the release reads that: a canary the worker cannot load fails the step, naming the replica and
what it serves, instead of passing on the registry's word."""

from __future__ import annotations

import httpx
import pytest

from freshrec.core.registry import Registry
from freshrec.pipeline.monitoring.serving_api import ServingClient
from freshrec.pipeline.release.analysis import CanaryPolicy
from freshrec.pipeline.release.controller import CanaryController, ReleasePlan
from freshrec.pipeline.release.convergence import NotServedEverywhere
from tests.serving.builders import served_variant
from tests.serving.conftest import RunningServer, World, admin_headers


def _controller(world: World, server: RunningServer, client: ServingClient, version: str) -> CanaryController:
    plan = ReleasePlan(version=version, steps=(5.0, 100.0), interval_s=1.0,
                       policy=CanaryPolicy.from_settings(world.settings), convergence_timeout_s=2.0)
    return CanaryController(world.registry, client, plan)


def _client(world: World, server: RunningServer) -> ServingClient:
    return ServingClient(world.settings.model_copy(update={"serving_url": server.url}))  # type: ignore[attr-defined]


def test_a_loaded_canary_step_is_confirmed(server: RunningServer, world: World) -> None:
    canary = world.register("run-2", seed=2)
    with _client(world, server) as client:
        _controller(world, server, client, canary).apply_weight(5.0)
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["generation"] == world.registry.serving_state().generation
    assert {v["role"]: v["version"] for v in models["versions"]}["canary"] == canary


def test_a_canary_the_worker_cannot_load_fails_the_step(server: RunningServer, world: World, champion: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    before = httpx.get(f"{server.url}/v1/models").json()["generation"]
    bad = world.register("run-2", seed=2)
    artifact = world.home / "models" / "run-2" / f"student.{served_variant()[0]}.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-16] + b"corrupted-bytes!")
    # Damaged after the registry's own check (shared storage, say): only the worker can tell.
    monkeypatch.setattr(Registry, "_verify_before_serving", lambda *_: None)
    with _client(world, server) as client, pytest.raises(NotServedEverywhere) as info:
        _controller(world, server, client, bad).apply_weight(5.0)
    gaps = info.value.details["replicas"][server.url]
    target = world.registry.serving_state().generation
    assert f"serves registry generation {before}, not {target}" in gaps
    assert f"serves canary none, not {bad}" in gaps and any(f"refused version {bad}" in g for g in gaps)

    # The worker keeps serving the champion and says which generation it really applied.
    models = httpx.post(f"{server.url}/admin/reconcile", headers=admin_headers()).json()
    assert models["generation"] == before and models["missing"] == [bad]
    assert {v["role"]: v["version"] for v in models["versions"]} == {"champion": champion}
