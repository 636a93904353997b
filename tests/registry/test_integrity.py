"""verify_artifact: the check the serving tier and the release preflight run before loading a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshrec.errors import ArtifactIntegrityError, InvalidInput
from freshrec.registry import Registry, verify_artifact
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
