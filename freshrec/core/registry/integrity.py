"""Artifact checksums: computed at registration, verified before anything loads or releases a model."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from freshrec.core.errors import ArtifactIntegrityError
from freshrec.core.registry.views import ArtifactView
from freshrec.core.schemas import SHA256SUMS

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_artifact(artifact: ArtifactView) -> None:
    """Raise ArtifactIntegrityError unless the file exists with the registered size and sha256."""
    path = Path(artifact.uri)
    if not path.is_file():
        label = f"artifact {artifact.variant}" if artifact.variant else "artifact"
        raise ArtifactIntegrityError(f"{label} missing: {path}", details={"uri": str(path)})
    size = path.stat().st_size
    if size != artifact.size:
        raise ArtifactIntegrityError(
            f"artifact {path} has {size} bytes, the registry recorded {artifact.size}",
            details={"uri": str(path), "expected_size": artifact.size, "size": size},
        )
    actual = sha256_file(path)
    if actual != artifact.sha256:
        raise ArtifactIntegrityError(
            f"artifact {path} sha256 {actual[:12]}... does not match the registered {artifact.sha256[:12]}...",
            details={"uri": str(path), "expected_sha256": artifact.sha256, "sha256": actual},
        )


def bundle_mismatches(bundle_dir: Path) -> list[str]:
    """Files of a bundle whose sha256 no longer matches its SHA256SUMS, or that are gone (empty: intact)."""
    bad = []
    for line in (bundle_dir / SHA256SUMS).read_text().splitlines():
        sha, name = line.split("  ", 1)
        if not (bundle_dir / name).is_file() or sha256_file(bundle_dir / name) != sha:
            bad.append(name)
    return bad


def verify_version(artifacts: Mapping[str, ArtifactView], bundle_dir: str | None) -> None:
    """Every registered artifact, and every file of the bundle's SHA256SUMS (vocab included) when it has
    one; ArtifactIntegrityError naming what does not verify."""
    for artifact in artifacts.values():
        verify_artifact(artifact)
    if bundle_dir and (Path(bundle_dir) / SHA256SUMS).is_file():
        bad = bundle_mismatches(Path(bundle_dir))
        if bad:
            raise ArtifactIntegrityError(f"bundle {bundle_dir}: {', '.join(bad)} missing or changed since export",
                                         details={"bundle": bundle_dir, "files": bad})
