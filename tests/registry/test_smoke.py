from __future__ import annotations

from pathlib import Path

from freshrec.registry import Registry, ServingState, VersionView, verify_artifact
from tests.registry.conftest import artifact_specs


def test_register_promote_and_serving_state(registry: Registry, bundle: Path) -> None:
    v = registry.register_candidate(bundle, artifact_specs(bundle), {"ndcg@10": 0.5}, {"code_version": "abc"}, {}, "t")
    assert isinstance(v, VersionView) and v.state == "candidate"
    registry.promote(v.version, "t", "first")
    state = registry.serving_state()
    assert isinstance(state, ServingState)
    assert state.champion is not None and state.champion.version == v.version
    assert state.generation == 1
    verify_artifact(state.champion.artifacts["int8"])
