"""Canary releases against a real `freshrec serve` under concurrent load (the controller directly)."""

from __future__ import annotations

import time

import pytest

from freshrec.core.registry import State
from freshrec.pipeline.monitoring.serving_api import ServingClient
from freshrec.pipeline.release.analysis import CanaryPolicy
from freshrec.pipeline.release.controller import CanaryController, ReleasePlan
from tests.release.stack import Load

pytestmark = pytest.mark.slow


def _plan(world, version, steps=(5, 25, 50, 100), interval_s=2.0, min_requests=30) -> ReleasePlan:
    return ReleasePlan(version=version, steps=tuple(float(s) for s in steps), interval_s=interval_s,
                       policy=CanaryPolicy.from_settings(world.settings, min_requests=min_requests),
                       convergence_timeout_s=30)


def _release(world, plan):
    with ServingClient(world.settings) as client:
        controller = CanaryController(world.registry, client, plan)
        result = controller.run()
        evidence = {"analyses": result.analyses}
        if result.decision == "promote":
            controller.promote(result.reasons, evidence)
        else:
            controller.roll_back(result.reasons, evidence)
    return result


def test_latency_canary_is_rolled_back_within_two_intervals(release_world, serving):
    world = release_world
    version = world.register("run-2", seed=2)
    world.registry.set_faults(version, latency_ms=40, actor="test")
    with Load(serving, world.users) as load:
        time.sleep(0.5)
        result = _release(world, _plan(world, version, steps=(25, 50, 100)))
        time.sleep(1.0)  # traffic keeps flowing through the rollback
    assert result.decision == "rollback", result.to_dict()
    judged = [a for a in result.analyses if a["outcome"] != "inconclusive"]
    assert len(result.analyses) <= 2 and judged[-1]["outcome"] == "fail"
    assert any("p99_latency" in r for r in result.reasons)
    view = world.registry.get_version(version)
    assert view.state == State.REJECTED
    assert view.verdicts and view.verdicts[-1]["verdict"]["verdict"] == "rolled_back" if isinstance(
        view.verdicts[-1].get("verdict"), dict) else view.verdicts
    assert load.failures == [], load.failures[:5]
    assert load.variants["canary"] > 0
    print("load", dict(load.status), dict(load.variants))


def test_healthy_canary_is_promoted_through_every_step(release_world, serving):
    world = release_world
    old_champion = str(world.registry.serving_state().champion.version)
    version = world.register("run-2", seed=2)
    with Load(serving, world.users) as load:
        time.sleep(0.5)
        result = _release(world, _plan(world, version))
        time.sleep(1.0)
    for a in result.analyses:
        print(a["weight"], a["outcome"], a["canary"]["requests"], a["canary"]["p99_ms"],
              a["champion"]["requests"], a["champion"]["p99_ms"], a["champion"]["p50_ms"])
    assert result.decision == "promote", result.to_dict()
    weights = [a["weight"] for a in result.analyses if a["outcome"] == "pass"]
    assert weights == [5, 25, 50, 100]
    state = world.registry.serving_state()
    assert str(state.champion.version) == version and str(state.previous.version) == old_champion
    assert load.failures == [], load.failures[:5]
    print("load", dict(load.status), dict(load.variants))


def test_error_injecting_canary_is_rolled_back(release_world, serving):
    world = release_world
    version = world.register("run-2", seed=2)
    world.registry.set_faults(version, error_rate=0.2, actor="test")
    with Load(serving, world.users) as load:
        time.sleep(0.5)
        result = _release(world, _plan(world, version, steps=(25, 50, 100)))
        rolled_back_at = time.monotonic()
        time.sleep(1.5)
    assert result.decision == "rollback", result.to_dict()
    assert len(result.analyses) <= 2
    assert any("error_rate" in r for r in result.reasons), result.reasons
    assert world.registry.get_version(version).state == State.REJECTED
    # Only canary requests failed, and none once the rollback had converged.
    assert load.failures and all(code == 500 for _, code, _ in load.failures)
    assert not [f for f in load.failures if f[0] > rolled_back_at]


def test_shadow_phase_judges_mirrored_scores_before_any_user_sees_the_canary(release_world, serving):
    world = release_world
    # The champion's weights re-registered (a retrain that changed nothing): no real score shift.
    version = world.register("run-2", seed=1)
    plan = ReleasePlan(version=version, steps=(100.0,), interval_s=2.0,
                       policy=CanaryPolicy.from_settings(world.settings, min_requests=30), shadow_first=True,
                       convergence_timeout_s=30)
    with Load(serving, world.users) as load:
        time.sleep(0.5)
        with ServingClient(world.settings) as client:
            controller = CanaryController(world.registry, client, plan)
            shadow = controller.run_shadow()
            served_during_shadow = dict(load.variants)
            result = controller.run()
    assert shadow.outcome.value == "pass", shadow.to_dict()
    assert shadow.canary["score_buckets"] and sum(shadow.canary["score_buckets"]) >= 30
    assert "canary" not in served_during_shadow  # mirrored only: every answer came from the champion
    assert result.decision == "promote", result.to_dict()
    assert load.failures == []
