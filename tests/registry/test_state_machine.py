"""Every transition of the version state machine, legal and illegal, through the public API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from freshrec.core.errors import Conflict, InvalidInput, NotFound
from freshrec.core.registry import TRANSITIONS, Registry, State
from freshrec.core.registry.transaction import check_transition
from tests.registry.conftest import artifact_specs


def register(registry: Registry, bundle: Path) -> int:
    return registry.register_candidate(bundle, artifact_specs(bundle), {"ndcg@10": 0.4}, {}, {}, "test").version


def version_in_state(registry: Registry, bundle: Path, state: State) -> int:
    """A version in ``state``; a champion exists in every world (the version itself when state is champion)."""
    base = register(registry, bundle)
    registry.promote(base, "test", "base champion")
    if state is State.CHAMPION:
        v = register(registry, bundle)
        registry.promote(v, "test", "make champion")
        return v
    if state is State.ARCHIVED:
        registry.promote(register(registry, bundle), "test", "archive the base")
        return base
    v = register(registry, bundle)
    if state is State.CANARY:
        registry.start_canary(v, 10, "test", "canary")
    elif state is State.REJECTED:
        registry.reject(v, ["bad"], {"ndcg@10": 0.1}, "test")
    return v


OPERATIONS: dict[State, Callable[[Registry, int], object]] = {
    State.CANARY: lambda reg, v: reg.start_canary(v, 5, "test", "try canary"),
    State.CHAMPION: lambda reg, v: reg.promote(v, "test", "try promote"),
    State.REJECTED: lambda reg, v: reg.reject(v, ["try reject"], {}, "test"),
}


@pytest.mark.parametrize("start", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("target", list(OPERATIONS), ids=lambda s: f"to-{s.value}")
def test_transition_through_api(registry: Registry, bundle: Path, start: State, target: State) -> None:
    v = version_in_state(registry, bundle, start)
    assert registry.get_version(v).state == start.value
    generation, audit_rows = registry.generation(), len(registry.audit_log())
    if target in TRANSITIONS[start]:
        OPERATIONS[target](registry, v)
        assert registry.get_version(v).state == target.value
        assert len(registry.audit_log()) > audit_rows
    else:
        with pytest.raises(Conflict) as excinfo:
            OPERATIONS[target](registry, v)
        assert f"version {v}" in excinfo.value.message
        # A refused move changes nothing: same state, same generation, no audit row.
        assert registry.get_version(v).state == start.value
        assert registry.generation() == generation
        assert len(registry.audit_log()) == audit_rows


@pytest.mark.parametrize("old", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("new", list(State), ids=lambda s: s.value)
def test_transition_table(old: State, new: State) -> None:
    legal = {
        (State.CANDIDATE, State.CANARY), (State.CANDIDATE, State.CHAMPION), (State.CANDIDATE, State.REJECTED),
        (State.CANARY, State.CHAMPION), (State.CANARY, State.REJECTED),
        (State.CHAMPION, State.ARCHIVED), (State.ARCHIVED, State.CHAMPION),
    }
    if (old, new) in legal:
        check_transition(1, old, new)
    else:
        with pytest.raises(Conflict, match=f"is {old.value}: it cannot become {new.value}"):
            check_transition(1, old, new)


def test_promote_moves_champion_to_previous_and_archives_it(registry: Registry, bundle: Path) -> None:
    first, second = register(registry, bundle), register(registry, bundle)
    registry.promote(first, "test", "first")
    registry.start_canary(second, 25, "test", "canary")
    registry.promote(second, "test", "healthy")
    state = registry.serving_state()
    assert (state.champion.version, state.previous.version, state.canary) == (second, first, None)
    assert state.canary_weight == 0.0
    assert registry.get_version(first).state == "archived"


def test_rollback_rejects_active_canary(registry: Registry, bundle: Path) -> None:
    champion, canary = register(registry, bundle), register(registry, bundle)
    registry.promote(champion, "test", "first")
    registry.start_canary(canary, 5, "test", "canary")
    state = registry.rollback("test", "p99 too high")
    assert state.canary is None and state.canary_weight == 0.0 and state.champion.version == champion
    rejected = registry.get_version(canary)
    assert rejected.state == "rejected" and rejected.reasons == ["p99 too high"]


def test_rollback_without_canary_restores_previous(registry: Registry, bundle: Path) -> None:
    first, second = register(registry, bundle), register(registry, bundle)
    registry.promote(first, "test", "first")
    registry.promote(second, "test", "second")
    state = registry.rollback("test", "regression")
    assert (state.champion.version, state.previous) == (first, None)
    assert registry.get_version(second).state == "archived"
    with pytest.raises(Conflict, match="nothing to roll back"):
        registry.rollback("test", "again")


def test_reject_records_reasons_and_evidence(registry: Registry, bundle: Path) -> None:
    v = register(registry, bundle)
    view = registry.reject(v, ["nDCG@10 below floor", "int8 loss 3%"], {"ndcg@10": 0.1, "floor": 0.3}, "gates")
    assert view.reasons == ["nDCG@10 below floor", "int8 loss 3%"]
    assert view.evidence == {"ndcg@10": 0.1, "floor": 0.3}
    with pytest.raises(InvalidInput):
        registry.reject(register(registry, bundle), [], {}, "gates")


def test_context_conflicts(registry: Registry, bundle: Path) -> None:
    a, b, c = register(registry, bundle), register(registry, bundle), register(registry, bundle)
    with pytest.raises(Conflict, match="no champion"):
        registry.start_canary(a, 5, "test", "no champion yet")
    with pytest.raises(Conflict, match="no active canary"):
        registry.set_canary_weight(5, "test", "none")
    registry.promote(a, "test", "first")
    registry.start_canary(b, 5, "test", "canary")
    with pytest.raises(Conflict, match="already the canary"):
        registry.start_canary(c, 5, "test", "second canary")
    with pytest.raises(Conflict, match="active canary"):
        registry.promote(c, "test", "bypass the canary")


def test_bad_input_is_refused(registry: Registry, bundle: Path) -> None:
    a, b = register(registry, bundle), register(registry, bundle)
    registry.promote(a, "test", "first")
    with pytest.raises(InvalidInput, match="0..100"):
        registry.start_canary(b, 150, "test", "too much")
    with pytest.raises(InvalidInput, match="error_rate"):
        registry.set_faults(b, 0, 2.0, "test")
    with pytest.raises(NotFound):
        registry.get_version(999)
    with pytest.raises(InvalidInput):
        registry.promote("seven", "test", "not a number")
    with pytest.raises(InvalidInput, match="does not exist"):
        registry.register_candidate(bundle, {"fp32": bundle / "missing.onnx"}, {}, {}, {}, "test")
    with pytest.raises(InvalidInput, match="parent_version"):
        registry.register_candidate(bundle, artifact_specs(bundle), {}, {"parent_version": 42}, {}, "test")
    with pytest.raises(InvalidInput, match="unknown version state"):
        registry.list_versions(["live"])
    assert registry.get_version(str(b)).state == "candidate"
