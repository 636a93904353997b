"""The edge bundle's export: checksums, trimming, immutability per version, the smallest graph with parity."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import onnx

from tests.serving.builders import scoring_model
from tests.serving.conftest import World


def test_bundle_files_match_the_manifest_and_trimming_is_reported(world: World, champion: str) -> None:
    from freshrec.pipeline.export.edge import bundle_bytes, export_edge, published_manifest, read_bundle_file
    from freshrec.serving.edge import MANIFEST

    assert published_manifest(world.settings) is None
    manifest = export_edge(world.settings)
    folder = world.settings.home / "edge" / champion
    # Stored gzipped only (what a device downloads and keeps); the manifest has the content's sha256 and sizes.
    assert manifest["storage"] == "gzip"
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST, *(f"{name}.gz" for name in manifest["files"])])
    for name, meta in manifest["files"].items():
        packed = (folder / f"{name}.gz").read_bytes()
        data = read_bundle_file(folder, name)
        assert data == gzip.decompress(packed) and len(packed) == meta["gzip_bytes"] < len(data)
        assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"]
    assert manifest["gzip_bytes"] == sum(m["gzip_bytes"] for m in manifest["files"].values())
    assert bundle_bytes(folder) == manifest["gzip_bytes"] + (folder / MANIFEST).stat().st_size
    assert published_manifest(world.settings) == manifest
    popular = json.loads(read_bundle_file(folder, "popular.json"))
    assert popular["items"][0] == 1 and abs(sum(popular["scores"]) - 1) < 1e-5  # share of interactions, i1 first

    trimmed = export_edge(world.settings, champion, world.home / "small", max_items=10)
    assert trimmed["trimmed"] == {"max_items": 10, "candidates": 10, "catalogue": len(world.items)}
    assert json.loads(read_bundle_file(world.home / "small", "candidates.json"))["items"] == list(range(1, 11))


def test_a_smaller_graph_is_kept_only_with_parity() -> None:
    from freshrec.pipeline.export.edge_graph import agreement, shrink, smallest_with_parity

    served = scoring_model(800, dim=16, seed=3).SerializeToString()
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, 801, size=int(rng.integers(1, 20))).tolist() for _ in range(200)]
    candidates = np.arange(1, 801, dtype=np.int64)
    name, graph, trials = smallest_with_parity(served, histories, candidates)
    assert [t["variant"] for t in trials] == ["served", "tables_fp16", "tables_int8"]
    assert sum(t["kept"] for t in trials) == 1 and len(graph) <= len(served)
    if name != "served":
        scores = agreement(served, graph, histories, candidates)
        assert scores["top10_identical"] >= 0.99 and scores["rank1_identical"] == 1.0
    small = shrink(served, "tables_int8")
    assert small is not None and len(small) < len(served) / 2
    onnx.checker.check_model(onnx.load_from_string(small))
    # A model without a large gathered fp32 table is left as it is.
    assert shrink(scoring_model(20, seed=1).SerializeToString(), "tables_fp16") is None


def test_the_release_hook_exports_once_and_never_fails_the_release(world: World, champion: str, caplog) -> None:
    from freshrec.pipeline.export.edge import export_after_promotion

    first = export_after_promotion(world.settings, champion)
    assert first is not None and first["model_version"] == champion
    assert export_after_promotion(world.settings, champion) == first  # immutable per version: not rewritten
    assert export_after_promotion(world.settings, "999") is None
    assert "not exported" in caplog.text


def test_popularity_shares_are_written_as_the_shortest_exact_float32() -> None:
    from freshrec.pipeline.export.edge import float32_shortest

    shares = np.random.default_rng(0).dirichlet(np.ones(500)).astype(np.float32)
    written = float32_shortest(shares)
    assert np.array_equal(np.array(written, dtype=np.float32), shares)  # the server's float32 values, exactly
    assert len(json.dumps(written)) < 0.7 * len(json.dumps(shares.tolist()))
    assert float32_shortest(np.array([0.0, 1e-9, 0.5], dtype=np.float32)) == [0.0, 1e-9, 0.5]
