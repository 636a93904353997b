"""Audit log (append-only, complete), serving_state generation bumps, lineage, metrics and verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from freshrec.core.registry import Registry
from tests.registry.conftest import artifact_specs


def _register(registry: Registry, bundle: Path, **lineage: object) -> int:
    return registry.register_candidate(bundle, artifact_specs(bundle), {}, lineage, {}, "retrain").version


def _assert_append_only(registry: Registry) -> None:
    before = registry.audit_log()
    assert before, "the scenario must have written audit rows"
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DatabaseError, match="append-only"), registry.engine.begin() as conn:
            conn.execute(text(statement))
    assert registry.audit_log() == before


def _scenario(registry: Registry, bundle: Path) -> None:
    first = _register(registry, bundle)
    registry.promote(first, "alice", "first model")


def test_audit_log_is_append_only_sqlite(registry: Registry, bundle: Path) -> None:
    _scenario(registry, bundle)
    _assert_append_only(registry)


@pytest.mark.postgres
def test_audit_log_is_append_only_postgres(pg_registry: Registry, bundle: Path) -> None:
    _scenario(pg_registry, bundle)
    _assert_append_only(pg_registry)


def test_every_write_is_audited_with_who_and_why(registry: Registry, bundle: Path) -> None:
    first, second = _register(registry, bundle), _register(registry, bundle)
    registry.promote(first, "alice", "first model")
    registry.start_canary(second, 5, "release", "step 1")
    registry.set_canary_weight(25, "release", "step 2")
    registry.set_faults(second, 40, 0.0, "bob", "rehearse a slow canary")
    registry.record_verdict(second, {"verdict": "fail", "p99_ms": 52.0, "reason": "p99 above SLO"}, "release")
    registry.rollback("release", "p99 above SLO")
    trail = [(e.action, e.actor, e.reason) for e in registry.audit_log(second)]
    assert trail == [
        ("register", "retrain", None),
        ("start_canary", "release", "step 1"),
        ("set_canary_weight", "release", "step 2"),
        ("set_faults", "bob", "rehearse a slow canary"),
        ("verdict", "release", "p99 above SLO"),
        ("rollback", "release", "p99 above SLO"),
    ]
    rollback = registry.audit_log(second)[-1]
    assert rollback.before["canary"] == second and rollback.before["canary_weight"] == 25.0
    assert rollback.after["canary"] is None and rollback.after["state"] == "rejected"
    assert all(e.at.tzinfo is not None for e in registry.audit_log())
    ids = [e.id for e in registry.audit_log()]
    assert ids == sorted(ids)


def test_generation_bumps_on_every_serving_change_only(registry: Registry, bundle: Path) -> None:
    first, second = _register(registry, bundle), _register(registry, bundle)
    assert registry.serving_state().generation == 0
    generations = [registry.generation()]
    for change in (
        lambda: registry.promote(first, "t", "first"),
        lambda: registry.start_canary(second, 5, "t", "canary", shadow=True),
        lambda: registry.set_canary_weight(50, "t", "step", shadow=False),
        lambda: registry.set_faults(second, 0, 0.5, "t"),
        lambda: registry.promote(second, "t", "healthy"),
        lambda: registry.rollback("t", "regression"),
    ):
        change()
        generations.append(registry.generation())
    assert generations == list(range(7))
    # Reads and bookkeeping that the serving tier does not act on leave the generation alone.
    registry.record_verdict(first, {"verdict": "pass"}, "t")
    _register(registry, bundle)
    assert registry.serving_state().generation == 6


def test_serving_state_reports_aliases_weight_shadow_and_faults(registry: Registry, bundle: Path) -> None:
    first, second = _register(registry, bundle), _register(registry, bundle)
    registry.promote(first, "t", "first")
    registry.start_canary(second, 0, "t", "shadow phase", shadow=True)
    state = registry.serving_state()
    assert (state.champion.version, state.canary.version, state.canary_weight, state.shadow) == (first, second, 0.0, True)
    registry.set_canary_weight(25, "t", "step", shadow=False)
    registry.set_faults(second, 40, 0.0, "t")
    state = registry.serving_state()
    assert (state.canary_weight, state.shadow) == (25.0, False)
    assert state.canary.faults == {"latency_ms": 40.0, "error_rate": 0.0}
    registry.set_faults(second, 0, 0, "t")
    assert registry.serving_state().canary.faults == {}
    assert state.to_dict()["canary"] == str(second)


def test_metrics_lineage_card_and_verdicts_round_trip(registry: Registry, bundle: Path) -> None:
    parent = _register(registry, bundle)
    view = registry.register_candidate(
        bundle,
        {"fp32": {"uri": "student.fp32.onnx"}, "int8": bundle / "student.int8.onnx"},
        {"ndcg@10": np.float32(0.5), "per_model": {"teacher": {"ndcg@10": 0.52}}, "curve": np.arange(3)},
        {
            "feature_days": ["2024-01-01", "2024-01-02"], "feature_manifests": [str(bundle / "m.json")],
            "code_version": "abc123", "dag_run_id": "manual__1", "warm_start_parent": str(parent), "epochs": 3,
        },
        {"params": 12345},
        "retrain",
    )
    assert view.metrics == {"ndcg@10": pytest.approx(0.5), "per_model": {"teacher": {"ndcg@10": 0.52}}, "curve": [0, 1, 2]}
    assert view.lineage["parent_version"] == parent and view.lineage["epochs"] == 3
    assert view.lineage["feature_days"] == ["2024-01-01", "2024-01-02"] and view.lineage["dag_run_id"] == "manual__1"
    assert view.card == {"params": 12345} and view.created_by == "retrain"
    assert set(view.artifacts) == {"fp32", "int8"} and Path(view.artifacts["fp32"].uri).is_absolute()
    registry.record_verdict(view.version, {"outcome": "inconclusive", "samples": 12, "reasons": ["too few", "requests"]}, "release")
    assert registry.audit_log(view.version)[-1].reason == "too few; requests"
    verdicts = registry.get_version(view.version).verdicts
    assert verdicts[0]["outcome"] == "inconclusive" and verdicts[0]["verdict"]["samples"] == 12
    assert view.to_dict()["version"] == str(view.version)
