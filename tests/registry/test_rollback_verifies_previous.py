"""A rollback without a canary makes `previous` the champion: a promotion, so its files must verify first."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshrec.core.errors import Conflict
from freshrec.core.registry import Registry
from tests.registry.conftest import artifact_specs


def _two_champions(registry: Registry, bundle: Path) -> tuple[int, int]:
    first = registry.register_candidate(bundle, artifact_specs(bundle), {}, {}, {}, "t").version
    registry.promote(first, "t", "first")
    other = bundle.parent / "bundle-2"
    other.mkdir()
    for path in bundle.iterdir():
        (other / path.name).write_bytes(path.read_bytes() + b"-2")
    second = registry.register_candidate(other, artifact_specs(other), {}, {}, {}, "t").version
    registry.promote(second, "t", "second")  # first becomes previous
    return first, second


def test_a_rollback_to_a_damaged_previous_is_refused(registry: Registry, bundle: Path) -> None:
    first, second = _two_champions(registry, bundle)
    (bundle / "student.int8.onnx").write_bytes(b"damaged")
    generation = registry.serving_state().generation
    with pytest.raises(Conflict, match=f"cannot roll back to version {first}.*student.int8.onnx"):
        registry.rollback("t", "bad canary")
    state = registry.serving_state()
    assert (state.champion.version, state.previous.version, state.generation) == (second, first, generation)

    (bundle / "student.int8.onnx").write_bytes(b"int8")  # repaired: the rollback goes through
    assert registry.rollback("t", "bad canary").champion.version == first


def test_aborting_a_canary_needs_no_verification(registry: Registry, bundle: Path) -> None:
    """Taking a canary out of traffic makes nothing new serve, so a damaged `previous` must not block it."""
    first, second = _two_champions(registry, bundle)
    third_dir = bundle.parent / "bundle-3"
    third_dir.mkdir()
    for path in bundle.iterdir():
        (third_dir / path.name).write_bytes(path.read_bytes() + b"-3")
    third = registry.register_candidate(third_dir, artifact_specs(third_dir), {}, {}, {}, "t").version
    registry.start_canary(third, 10, "t")
    (bundle / "student.int8.onnx").write_bytes(b"damaged")  # previous (first) is damaged
    state = registry.rollback("t", "canary failed")
    assert state.canary is None and state.champion.version == second
