"""The edge bundle: one registered version's student graph plus what a browser needs to rank like the server.

``<home>/edge/<version>/`` holds, each stored gzipped as ``<name>.gz`` and named in the manifest with the
sha256 and size of its content and its stored (gzip) size:

    model.onnx       the student graph the CPU server scores with (int8; fp32 when the version has no int8). Its
                     int8 recipe usually stores the embedding tables in int8 too (``row_tables``), so the edge
                     graph is the served graph byte for byte; for a version whose served graph keeps fp32
                     tables, a smaller storage of it when that keeps parity on real histories (``edge_graph``)
    items.json       {"items": [item_id, ...]}: item index i >= 1 is items[i - 1] (the ONNX contract)
    popular.json     {"items": [index, ...], "scores": [share, ...]}: the cold-start list, most popular first
    candidates.json  {"items": [index, ...]}: the items scored for a recommendation (the server's shared set)
    manifest.json    version, lineage, files, the ONNX input contract and the ranking rules (stored as is)

Stored gzipped because that is what a device downloads and keeps: the serving tier sends ``<name>.gz`` with
``Content-Encoding: gzip`` (the browser decodes it and the client checks the content's sha256) and decodes it
for the rare client that does not accept gzip.

The ranking rules are the serving tier's (``freshrec.serving.service``): popularity and the candidate set come
from the same ``bind_snapshot`` and ``shared_candidates`` the server uses, so a client that merges its local
history as ``merge_live`` does gets the server's list. A bundle is immutable: exporting a version again
replaces the folder atomically and changes nothing a client verified, unless the snapshot moved.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from freshrec.core.errors import FreshRecError, NotFound
from freshrec.core.layout import Layout
from freshrec.core.registry import open_registry
from freshrec.core.schemas import ONNX_INPUT_CANDIDATES, ONNX_INPUT_HISTORY, ONNX_OUTPUT_SCORES, PAD_INDEX
from freshrec.core.settings import Settings
from freshrec.pipeline.export.edge_graph import smallest_with_parity
from freshrec.serving.edge import BUNDLE_FILES, MANIFEST, edge_root, stored_path
from freshrec.serving.snapshot import OnlineSnapshot, bind_snapshot, current_snapshot_name, read_snapshot
from freshrec.serving.versions import read_vocab_items, shared_candidates

# Scores the browser's WASM int8 kernels compute may differ from the server's x86 ones in the last bits:
# ranks are compared exactly, scores within this absolute tolerance.
SCORE_TOLERANCE = 1e-3
PARITY_HISTORIES = 300
EDGE_VARIANTS = ("int8", "fp32")  # smallest first: the first the version has is shipped
log = logging.getLogger(__name__)


def pick_version(settings: Settings, version: str | None) -> Any:
    """The registry view of ``version``, or of the champion when none is named."""
    registry = open_registry(settings)
    try:
        if version:
            return registry.get_version(version)
        champion = registry.serving_state().champion
        if champion is None:
            raise NotFound("there is no champion to export; name a version")
        return champion
    finally:
        registry.close()


def edge_arrays(snapshot: OnlineSnapshot, item_ids: list[str], history_length: int, max_candidates: int,
                max_items: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(popular, popular_scores, candidates) exactly as the server binds them; ``max_items`` trims the
    candidate set (and the cold-start list) to the most popular items, a size/latency budget for devices."""
    users = bind_snapshot(snapshot, item_ids, history_length)
    limit = max_candidates if max_items is None else min(max_candidates, max_items)
    candidates = shared_candidates(len(item_ids), users, limit)
    popular, scores = users.popular, users.popular_scores
    if max_items is not None:
        popular, scores = popular[:max_items], scores[:max_items]
    return popular, scores, candidates


def _check_histories(snapshot: OnlineSnapshot, item_ids: list[str], history_length: int, n: int = PARITY_HISTORIES,
                     seed: int = 0) -> list[list[int]]:
    """Up to ``n`` snapshot histories in model indices (the last ``history_length``), for the parity check."""
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    lists = [h for h in ([index[i] for i in items if i in index] for items in snapshot.histories.to_pylist() if items) if h]
    picked = np.random.default_rng(seed).permutation(len(lists))[:n]
    return [lists[i][-history_length:] for i in picked]


def _int8_recipe(bundle_dir: Path) -> dict[str, Any] | None:
    """The int8 recipe the export chose for the served graph (its model card), None for older bundles."""
    try:
        return json.loads((bundle_dir / "model_card.json").read_text())["export"]["int8_recipe"]
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None


def float32_shortest(values: np.ndarray) -> list[float]:
    """Each float32 as the shortest decimal that reads back as the same float32 (``0.0013351135``, not the
    float64 expansion ``0.0013351134846461949``): the same scores as the server's, in half the bytes."""
    return [float(np.format_float_positional(v, unique=True)) for v in values.astype(np.float32)]


def bundle_bytes(folder: Path) -> int:
    """What a bundle takes where it is kept (the serving tier's disk, a device): its folder, manifest included."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def read_bundle_file(folder: Path, name: str) -> bytes:
    """A bundle file's content: bundles store ``<name>.gz`` (bundles exported before that, the file itself)."""
    packed = stored_path(folder, name)
    return gzip.decompress(packed.read_bytes()) if packed.is_file() else (folder / name).read_bytes()


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, separators=(",", ":")))


def _file_entry(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def published_manifest(settings: Settings, version: str | None = None) -> dict[str, Any] | None:
    """The manifest of the version's bundle under ``<home>/edge/``, or None when it is not published."""
    path = edge_root(settings.home) / str(pick_version(settings, version).version) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def export_edge(settings: Settings, version: str | None = None, out: Path | None = None,
                max_items: int | None = None) -> dict[str, Any]:
    """Write the bundle of ``version`` (default: the champion) and return its manifest.

    ``out`` defaults to ``<home>/edge/<version>/``, the folder the serving tier publishes."""
    view = pick_version(settings, version)
    number = str(view.version)
    variant = next((v for v in EDGE_VARIANTS if v in view.artifacts), None)
    if variant is None:
        raise NotFound(f"version {number} has no {' or '.join(EDGE_VARIANTS)} student graph")
    graph = Path(view.artifacts[variant].uri)
    item_ids = read_vocab_items(Path(view.bundle_dir))
    online = Layout(settings.home).online
    snapshot_name = current_snapshot_name(online)
    snapshot = read_snapshot(online, snapshot_name) if snapshot_name else OnlineSnapshot.empty()
    history_length = settings.data.online_history_length
    popular, popular_scores, candidates = edge_arrays(snapshot, item_ids, history_length,
                                                      settings.serving.max_candidates, max_items)
    target = out or edge_root(settings.home) / number
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        checked = _check_histories(snapshot, item_ids, history_length)
        graph_name, graph_bytes, trials = smallest_with_parity(graph.read_bytes(), checked, candidates)
        (staging / "model.onnx").write_bytes(graph_bytes)
        _write_json(staging / "items.json", {"items": item_ids})
        _write_json(staging / "popular.json", {"items": popular.tolist(), "scores": float32_shortest(popular_scores)})
        _write_json(staging / "candidates.json", {"items": candidates.tolist()})
        files = {name: _file_entry(staging / name) for name in BUNDLE_FILES}
        for name, entry in files.items():  # stored gzipped only: what the serving tier sends and a device keeps
            raw = staging / name
            packed = gzip.compress(raw.read_bytes(), compresslevel=9, mtime=0)
            stored_path(staging, name).write_bytes(packed)
            raw.unlink()
            entry["gzip_bytes"] = len(packed)
        fp32 = view.artifacts.get("fp32")
        manifest = {
            "format": 1,
            "model_version": number,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "artifact_variant": variant,
            "graph": {"stored": graph_name, "parity_histories": len(checked), "trials": trials,
                      "int8_recipe": _int8_recipe(Path(view.bundle_dir)) if variant == "int8" else None},
            "source_sha256": view.artifacts[variant].sha256,
            "lineage": {"bundle_dir": Path(view.bundle_dir).name, "state": view.state,
                        "created_at": view.created_at.isoformat(), **view.lineage},
            "snapshot": snapshot.name,
            "files": files,
            "storage": "gzip",
            "bytes": sum(f["bytes"] for f in files.values()),
            "gzip_bytes": sum(f["gzip_bytes"] for f in files.values()),
            "fp32_graph_bytes": fp32.size if fp32 is not None else None,
            "n_items": len(item_ids),
            "trimmed": None if max_items is None else {"max_items": max_items, "candidates": int(candidates.size),
                                                       "catalogue": len(item_ids)},
            "onnx": {
                "inputs": {ONNX_INPUT_HISTORY: {"type": "int64", "shape": ["batch", "history_len"]},
                           ONNX_INPUT_CANDIDATES: {"type": "int64", "shape": ["batch", "n_candidates"]}},
                "outputs": {ONNX_OUTPUT_SCORES: {"type": "float32", "shape": ["batch", "n_candidates"]}},
                "pad_index": PAD_INDEX,
                "index_base": 1,
            },
            "ranking": {"history_length": history_length, "exclude_seen": True,
                        "history_order": "distinct items by last interaction, ties by item id, oldest first",
                        "score_tolerance": SCORE_TOLERANCE},
        }
        _write_json(staging / MANIFEST, manifest)
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _replace_dir(staging: Path, target: Path) -> None:
    """Swap the new folder in; a reader sees the old bundle or the new one, never a mix of both."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def export_after_promotion(settings: Settings, version: str) -> dict[str, Any] | None:
    """The release's hook: the promoted champion's bundle, so edge clients follow it. A failure is logged,
    not raised: the server-side release stands, and edge clients keep the bundle they have (the manifest
    route answers 404 for a version without one, and clients then keep scoring with their last bundle)."""
    try:
        return published_manifest(settings, version) or export_edge(settings, version)
    except (FreshRecError, OSError, ValueError) as exc:
        log.warning("edge bundle of version %s not exported: %s", version, exc)
        return None
