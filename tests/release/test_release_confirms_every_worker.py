"""A release step is done only when every worker of every replica serves it, as GET /v1/models says.

The answers below have the shape freshrec.serving.api gives /v1/models: one worker's own view (versions by
role, canary weight, refusals) and, behind a multi-worker port, each worker's applied generation.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from freshrec.core.registry import State
from freshrec.pipeline.release.analysis import CanaryPolicy
from freshrec.pipeline.release.controller import CanaryController, ReleasePlan
from freshrec.pipeline.release.convergence import IntendedServing, NotServedEverywhere, confirm_served, served_gaps

CANARY_STEP = IntendedServing(generation=7, champion="1", canary="2", canary_weight=25.0, shadow=False)


def _models(generation: int = 7, champion: str = "1", canary: str | None = "2", weight: float = 25.0,
            workers: list[tuple[int, int]] | None = None, refused: list[dict] | None = None) -> dict[str, Any]:
    versions = [{"role": "champion", "version": champion}]
    if canary is not None:
        versions.append({"role": "canary", "version": canary})
    answer: dict[str, Any] = {"generation": generation, "canary_weight": weight if canary else 0.0, "shadow": False,
                              "versions": versions, "missing": [], "refused": refused or []}
    if workers:
        answer.update(worker_generation=generation, generation=min(g for _, g in workers),
                      workers=[{"pid": pid, "generation": g} for pid, g in workers])
    return answer


class FakeServing:
    """Replica URL -> the /v1/models answer it gives (a callable may change it over time)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.replicas = list(answers)
        self.answers = answers
        self.reconciles = 0

    def reconcile_all(self) -> None:
        self.reconciles += 1

    def models(self, replica: str) -> dict[str, Any]:
        answer = self.answers[replica]
        return answer() if callable(answer) else answer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _confirm(serving: FakeServing, intended: IntendedServing = CANARY_STEP, timeout_s: float = 5.0) -> FakeClock:
    clock = FakeClock()
    confirm_served(serving, intended, timeout_s, sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]
    return clock


def test_a_step_every_worker_serves_is_confirmed() -> None:
    serving = FakeServing({"http://a": _models(workers=[(11, 7), (12, 7)]), "http://b": _models()})
    assert _confirm(serving).now == 0.0
    assert serving.reconciles == 1  # asked to reconcile at once rather than at their next poll


def test_a_worker_that_never_picks_the_step_up_fails_it_naming_the_worker() -> None:
    # The answering worker serves the canary; its sibling behind the same port is still at generation 6.
    serving = FakeServing({"http://a": _models(workers=[(11, 7), (12, 6)]), "http://b": _models()})
    with pytest.raises(NotServedEverywhere, match=r"http://a: worker pid 12 serves registry generation 6, not 7") as info:
        _confirm(serving)
    assert list(info.value.details["replicas"]) == ["http://a"]
    assert "canary 2 at 25%" in info.value.message and info.value.exit_code == 11


def test_one_answer_is_not_trusted_for_the_whole_tier() -> None:
    # Replica b applied the generation but serves no canary (it refused it): the step fails, naming why.
    refused = [{"version": "2", "reason": "artifact .../run-2/student.int8.onnx sha256 does not match"}]
    serving = FakeServing({"http://a": _models(), "http://b": _models(generation=6, canary=None, refused=refused)})
    with pytest.raises(NotServedEverywhere) as info:
        _confirm(serving)
    gaps = info.value.details["replicas"]
    assert list(gaps) == ["http://b"]
    assert "serves canary none, not 2" in gaps["http://b"] and any("refused version 2" in g for g in gaps["http://b"])


def test_a_worker_that_catches_up_before_the_deadline_passes() -> None:
    answers = iter([_models(workers=[(11, 7), (12, 6)])] * 3)
    serving = FakeServing({"http://a": lambda: next(answers, _models(workers=[(11, 7), (12, 7)]))})
    assert 0 < _confirm(serving).now < 5.0


@pytest.mark.parametrize(("answer", "gap"), [
    (_models(weight=5.0), "sends 5% to the canary, not 25%"),
    (_models(champion="3"), "serves champion 3, not 1"),
    (_models(generation=-1, canary=None), "serves registry generation -1, not 7"),
])
def test_each_difference_is_named(answer: dict[str, Any], gap: str) -> None:
    assert gap in served_gaps(answer, CANARY_STEP)


def test_after_a_rollback_a_worker_still_serving_the_canary_is_named() -> None:
    rolled_back = IntendedServing(generation=8, champion="1", canary=None, canary_weight=0.0, shadow=False)
    assert served_gaps(_models(generation=8, canary=None), rolled_back) == []
    assert served_gaps(_models(generation=8), rolled_back) == ["serves canary 2, not none"]


class PromotedRegistry:
    """The registry after version 2's promotion (generation 8), recording verdicts."""

    def __init__(self) -> None:
        self.verdicts: list[dict] = []

    def serving_state(self) -> SimpleNamespace:
        return SimpleNamespace(champion=SimpleNamespace(version=2), canary=None, previous=SimpleNamespace(version=1),
                               canary_weight=0.0, shadow=False, generation=8)

    def get_version(self, version: str) -> SimpleNamespace:
        return SimpleNamespace(state=State.CHAMPION)

    def record_verdict(self, version: str, verdict: dict, actor: str) -> None:
        self.verdicts.append(verdict)


def test_a_promotion_one_worker_does_not_serve_fails_after_recording_why() -> None:
    """Before, the promotion passed with a warning; the step is not done while a worker serves the old champion."""
    registry = PromotedRegistry()
    serving = FakeServing({"http://a": _models(generation=8, champion="2", canary=None, workers=[(11, 8), (12, 7)])})
    plan = ReleasePlan(version="2", steps=(100.0,), interval_s=1.0, policy=CanaryPolicy(), convergence_timeout_s=0.01)
    with pytest.raises(NotServedEverywhere, match="worker pid 12 serves registry generation 7, not 8"):
        CanaryController(registry, serving, plan).promote(["healthy"], {})  # type: ignore[arg-type]
    assert registry.verdicts[-1]["replicas_converged"] is False
    assert registry.verdicts[-1]["not_served"] == {"http://a": ["worker pid 12 serves registry generation 7, not 8"]}
