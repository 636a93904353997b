"""Preflight against real bundles: checksums and the offline ORT latency budget."""

from __future__ import annotations

import pytest

from freshrec.core.errors import ArtifactIntegrityError, GateFailed
from freshrec.core.registry import open_registry
from freshrec.core.settings import get_settings
from freshrec.pipeline.release.preflight import run_preflight
from tests.serving.builders import write_bundle


@pytest.fixture
def candidate(freshrec_home):
    settings = get_settings()
    registry = open_registry(settings)
    bundle = freshrec_home / "models" / "run-1"
    artifacts = write_bundle(bundle, [f"i{n}" for n in range(1, 51)], seed=3)
    view = registry.register_candidate(bundle, artifacts, {}, {}, {}, actor="test")
    yield settings, registry, str(view.version), artifacts
    registry.close()


def test_preflight_measures_the_serving_artifact(candidate):
    settings, registry, version, _ = candidate
    evidence = run_preflight(settings, registry, version, budget_ms=50.0)
    assert evidence["variant"] == "int8"  # what serving loads on CPU
    assert set(evidence["checksums"]) == {"fp32", "int8"}
    latency = evidence["offline_latency"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] < 50
    assert latency["providers"] == ["CPUExecutionProvider"]


def test_preflight_fails_an_impossible_budget(candidate):
    settings, registry, version, _ = candidate
    with pytest.raises(GateFailed) as caught:
        run_preflight(settings, registry, version, budget_ms=1e-6)
    assert caught.value.details["offline_latency"]["p99_ms"] > 1e-6


def test_preflight_catches_a_tampered_artifact(candidate):
    settings, registry, version, artifacts = candidate
    artifacts["int8"].write_bytes(artifacts["int8"].read_bytes() + b"tampered")
    with pytest.raises(ArtifactIntegrityError):
        run_preflight(settings, registry, version, budget_ms=50.0)


def test_preflight_of_a_retrieval_bundle_times_the_candidate_graph(freshrec_home, monkeypatch):
    from tests.serving.builders import ann_student, write_retrieval_bundle

    monkeypatch.setenv("FRESHREC_SERVING__MAX_CANDIDATES", "20")  # 50 items: served through ANN retrieval
    monkeypatch.setenv("FRESHREC_SERVING__RETRIEVAL_FETCH", "12")
    get_settings.cache_clear()
    settings = get_settings()
    bundle = freshrec_home / "models" / "run-ann"
    artifacts = write_retrieval_bundle(bundle, [f"i{n}" for n in range(1, 51)], ann_student(50, seed=1))
    with open_registry(settings) as registry:
        view = registry.register_candidate(bundle, artifacts, {}, {}, {}, actor="test")
        evidence = run_preflight(settings, registry, str(view.version), budget_ms=50.0)
    assert evidence["variant"] == "candidates" and evidence["offline_latency"]["n_candidates"] == 12
    assert 0 < evidence["offline_latency"]["p50_ms"] <= evidence["offline_latency"]["p99_ms"] < 50
