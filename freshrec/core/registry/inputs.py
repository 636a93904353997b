"""Pure helpers that turn what callers hand to the registry into storable values (no I/O but hashing)."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from freshrec.core.errors import InvalidInput
from freshrec.core.registry.integrity import sha256_file
from freshrec.core.registry.views import ArtifactView

_VARIANT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
# Lineage keys with their own columns; everything else the caller passes is kept in `extra`.
LINEAGE_COLUMNS = ("feature_days", "feature_manifests", "code_version", "dag_run_id", "parent_version")


def to_jsonable(value: Any, where: str = "value") -> Any:
    """Plain JSON types from what ML code passes around (numpy scalars/arrays, paths, dates)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, f"{where}[]") for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy here
        return to_jsonable(value.tolist(), where)
    raise InvalidInput(f"{where}: {type(value).__name__} cannot be stored as JSON")


def resolve_artifact(variant: str, spec: Any, bundle_dir: Path) -> ArtifactView:
    """An ArtifactView from a path, a mapping with ``uri`` (and optional sha256/size), or an ArtifactView.

    The file must exist; a given checksum or size must match the file, so a registered artifact is
    always one that verifies.
    """
    if not isinstance(variant, str) or not _VARIANT.match(variant):
        raise InvalidInput(f"artifact variant {variant!r}: use a short lowercase name such as fp32, int8, fp16")
    uri: str | Path
    sha: str | None
    size: int | None
    if isinstance(spec, ArtifactView):
        uri, sha, size = spec.uri, spec.sha256, spec.size
    elif isinstance(spec, Mapping):
        if "uri" not in spec and "path" not in spec:
            raise InvalidInput(f"artifact {variant}: needs a 'uri'")
        uri, sha, size = spec.get("uri", spec.get("path")), spec.get("sha256"), spec.get("size")
    elif isinstance(spec, (str, Path)):
        uri, sha, size = spec, None, None
    else:
        raise InvalidInput(f"artifact {variant}: expected a path, a mapping or an ArtifactView, got {type(spec).__name__}")
    path = Path(uri).expanduser()
    if not path.is_absolute():
        path = bundle_dir / path
    path = path.resolve()
    if not path.is_file():
        raise InvalidInput(f"artifact {variant}: file {path} does not exist")
    actual_size = path.stat().st_size
    actual_sha = sha256_file(path)
    if sha and sha != actual_sha:
        raise InvalidInput(f"artifact {variant}: sha256 given ({sha[:12]}...) differs from the file's ({actual_sha[:12]}...)")
    if size is not None and int(size) != actual_size:
        raise InvalidInput(f"artifact {variant}: size given ({size}) differs from the file's ({actual_size})")
    return ArtifactView(uri=str(path), sha256=actual_sha, size=actual_size, variant=variant)


def metric_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One row per top-level metric; names must fit the column."""
    values = to_jsonable(dict(metrics), "metrics")
    too_long = [name for name in values if len(name) > 256]
    if too_long:
        raise InvalidInput(f"metric names longer than 256 characters: {too_long[0][:40]}...")
    return values


def split_lineage(lineage: Mapping[str, Any]) -> dict[str, Any]:
    """Column values for the lineage table; unknown keys go to ``extra``."""
    plain = to_jsonable(dict(lineage), "lineage")
    if "warm_start_parent" in plain and "parent_version" not in plain:
        plain["parent_version"] = plain.pop("warm_start_parent")
    parent = plain.get("parent_version")
    if parent is not None:
        try:
            parent = int(parent)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"lineage.parent_version {parent!r} is not a version number") from exc
    columns = {
        "feature_days": list(plain.get("feature_days") or []),
        "feature_manifests": list(plain.get("feature_manifests") or []),
        "code_version": None if plain.get("code_version") is None else str(plain["code_version"]),
        "dag_run_id": None if plain.get("dag_run_id") is None else str(plain["dag_run_id"]),
        "parent_version": parent,
    }
    columns["extra"] = {k: v for k, v in plain.items() if k not in LINEAGE_COLUMNS}
    return columns


def check_weight(weight: float) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"canary weight {weight!r} is not a number") from exc
    if not 0.0 <= value <= 100.0:
        raise InvalidInput(f"canary weight {value} must be within 0..100 (percent of traffic)")
    return value


def check_faults(latency_ms: float, error_rate: float) -> dict[str, float]:
    """The stored fault spec; both zero clears it."""
    latency, errors = float(latency_ms), float(error_rate)
    if not math.isfinite(latency) or latency < 0:
        raise InvalidInput(f"fault latency_ms {latency_ms!r} must be >= 0")
    if not 0.0 <= errors <= 1.0:
        raise InvalidInput(f"fault error_rate {error_rate!r} must be within 0..1")
    return {} if latency == 0 and errors == 0 else {"latency_ms": latency, "error_rate": errors}


def reason_list(reasons: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if reasons is None:
        return []
    if isinstance(reasons, str):
        return [reasons]
    return [str(r) for r in reasons]
