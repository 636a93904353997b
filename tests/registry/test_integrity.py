"""verify_artifact: the check the serving tier and the release preflight run before loading a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshrec.core.errors import ArtifactIntegrityError, Conflict, InvalidInput
from freshrec.core.registry import Registry, verify_artifact
from tests.registry.conftest import artifact_specs


def test_verify_artifact_catches_corruption_and_loss(registry: Registry, bundle: Path) -> None:
    view = registry.register_candidate(bundle, artifact_specs(bundle), {}, {}, {}, "t")
    int8 = view.artifacts["int8"]
    verify_artifact(int8)  # intact

    path = Path(int8.uri)
    original = path.read_bytes()
    path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])  # same size, one flipped byte
    with pytest.raises(ArtifactIntegrityError, match="sha256") as excinfo:
        verify_artifact(int8)
    assert excinfo.value.details["expected_sha256"] == int8.sha256

    path.write_bytes(original + b"tail")
    with pytest.raises(ArtifactIntegrityError, match="bytes"):
        verify_artifact(int8)

    path.unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        verify_artifact(int8)


def test_registration_refuses_a_wrong_checksum(registry: Registry, bundle: Path) -> None:
    spec = {"uri": str(bundle / "student.fp32.onnx"), "sha256": "0" * 64}
    with pytest.raises(InvalidInput, match="sha256"):
        registry.register_candidate(bundle, {"fp32": spec}, {}, {}, {}, "t")
    assert registry.list_versions() == []


def _second_bundle(bundle: Path) -> Path:
    other = bundle.parent / "bundle-2"
    other.mkdir()
    for path in bundle.iterdir():
        (other / path.name).write_bytes(path.read_bytes() + b"-2")
    return other


def test_promotion_and_canary_are_refused_unless_every_file_verifies(registry: Registry, bundle: Path) -> None:
    from freshrec.core.registry.integrity import sha256_file
    from freshrec.core.schemas import SHA256SUMS

    first = registry.register_candidate(bundle, artifact_specs(bundle), {}, {}, {}, "t")
    registry.promote(first.version, "t", "first")
    other = _second_bundle(bundle)
    (other / "vocab.json").write_text('{"items": ["a", "b"]}')
    (other / SHA256SUMS).write_text("".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(other.iterdir())))
    second = registry.register_candidate(other, artifact_specs(other), {}, {}, {}, "t")

    (other / "student.int8.onnx").write_bytes(b"truncated")  # a registered artifact changed
    for move in (lambda: registry.promote(second.version, "t"), lambda: registry.start_canary(second.version, 10, "t")):
        with pytest.raises(Conflict, match=f"version {second.version}.*student.int8.onnx"):
            move()
    state = registry.serving_state()
    assert state.champion.version == first.version and state.canary is None and state.generation == 1

    (other / "student.int8.onnx").write_bytes(b"int8-2")  # restored; now a file only SHA256SUMS covers changes
    (other / "vocab.json").write_text('{"items": ["b", "a"]}')
    with pytest.raises(Conflict, match="vocab.json"):
        registry.promote(second.version, "t")
    (other / "vocab.json").write_text('{"items": ["a", "b"]}')
    assert registry.promote(second.version, "t").state == "champion"
