"""The edge bundle: export, the serving routes, and the JS client in headless chromium against /v1/recommend."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import httpx
import numpy as np

from tests.browser.cdp import Page
from tests.serving.conftest import RunningServer, World, admin_headers


def histories(items: list[str], n: int, seed: int) -> dict[str, list[dict]]:
    """Fresh users (not in the snapshot) with 0..12 events each, repeats included, one second apart."""
    rng = np.random.default_rng(seed)
    now = time.time()
    out = {}
    for u in range(n):
        picks = rng.choice(items, size=int(rng.integers(0, 13)), replace=True)
        out[f"edge-{seed}-{u}"] = [{"item_id": str(item), "ts": float(int(now) - 100 + i)} for i, item in enumerate(picks)]
    return out


def post_events(url: str, users: dict[str, list[dict]]) -> None:
    events = [{"event_id": uuid.uuid4().hex, "user_id": user, "item_id": e["item_id"], "event_type": "click",
               "value": 1.0, "ts": e["ts"]} for user, entries in users.items() for e in entries]
    response = httpx.post(f"{url}/v1/events", json={"events": events}, timeout=30)
    assert response.status_code == 200 and response.json()["accepted"] == len(events), response.text


def compare(page: Page, url: str, users: dict[str, list[dict]]) -> list[tuple[str, list, list]]:
    """(user, server items, edge items) for every user whose lists differ; rank 1 is asserted equal for all."""
    differ = []
    for user, entries in users.items():
        server = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": 10, "exclude_seen": True}, timeout=30).json()
        edge = page.evaluate(f"window.edgeDemo.rank({json.dumps(entries)}, 10)")
        assert edge["model_version"] == server["model_version"]
        assert edge["reason"] == server["reason"], (user, entries, server)
        s_items = [i["item_id"] for i in server["items"]]
        e_items = [i["item_id"] for i in edge["items"]]
        assert s_items[:1] == e_items[:1], (user, server["items"], edge["items"])
        np.testing.assert_allclose([i["score"] for i in edge["items"]][:1], [i["score"] for i in server["items"]][:1], atol=1e-3)
        if s_items != e_items:
            differ.append((user, server["items"], edge["items"]))
    return differ


def test_browser_recommendations_match_the_server(demo_page: Page, edge_server: RunningServer, world: World) -> None:
    users = histories(world.items, 60, seed=1)
    post_events(edge_server.url, users)
    differ = compare(demo_page, edge_server.url, users)
    assert len(differ) <= len(users) // 100, differ  # >= 99% identical top-10


def test_events_queued_offline_are_sent_once_online(demo_page: Page, edge_server: RunningServer, world: World) -> None:
    demo_page.send("Network.enable")
    demo_page.send("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1)
    assert demo_page.evaluate("navigator.onLine") is False
    items = json.dumps(world.items[:20])
    demo_page.evaluate(f"(async () => {{ const c = window.edgeDemo.client; for (const i of {items}) c.record(i); }})()")
    assert demo_page.evaluate("window.edgeDemo.client.queue.length") == 20
    offline = demo_page.evaluate("window.edgeDemo.client.recommend(10)")
    assert offline["reason"] == "personalised"  # the local history is scored on the device while offline
    demo_page.send("Network.emulateNetworkConditions", offline=False, latency=0, downloadThroughput=-1, uploadThroughput=-1)
    demo_page.wait_for("window.edgeDemo.client.queue.length === 0", timeout=30, what="the queue drained")
    stats = demo_page.evaluate("window.edgeDemo.client.stats")
    assert stats["accepted"] == 20 and stats["rejected"] == 0
    server = httpx.post(f"{edge_server.url}/v1/recommend", json={"user_id": "edge-test", "k": 10}, timeout=30).json()
    assert [i["item_id"] for i in server["items"]][:1] == [i["item_id"] for i in offline["items"]][:1]


def test_manifest_files_and_rollback(edge_server: RunningServer, world: World, champion: str) -> None:
    from freshrec.pipeline.export.edge import export_edge

    url = edge_server.url
    manifest = httpx.get(f"{url}/v1/edge/manifest").json()
    assert manifest["model_version"] == champion and manifest["artifact_variant"] == "int8"
    assert manifest["onnx"]["inputs"]["history"]["type"] == "int64"
    for name, meta in manifest["files"].items():
        for encoding in ("gzip", "identity"):  # a browser accepts gzip: the stored file is sent; others get it decoded
            asks = {"Accept-Encoding": encoding}
            response = httpx.get(f"{url}/v1/edge/{champion}/{name}", headers=asks)
            assert response.status_code == 200 and hashlib.sha256(response.content).hexdigest() == meta["sha256"]
            assert response.headers.get("content-encoding") == (encoding if encoding == "gzip" else None)
            assert response.num_bytes_downloaded == (meta["gzip_bytes"] if encoding == "gzip" else meta["bytes"])
            assert "immutable" in response.headers["cache-control"] and response.headers["vary"] == "Accept-Encoding"
            again = httpx.get(f"{url}/v1/edge/{champion}/{name}", headers={**asks, "If-None-Match": response.headers["etag"]})
            assert again.status_code == 304
    assert manifest["gzip_bytes"] < manifest["bytes"]
    assert manifest["files"]["model.onnx"]["bytes"] < manifest["fp32_graph_bytes"]
    assert httpx.get(f"{url}/v1/edge/{champion}/../../registry.db").status_code == 404
    assert httpx.get(f"{url}/v1/edge/{champion}/SHA256SUMS").status_code == 404

    # A new champion with its bundle: clients move to it; the rollback moves them back.
    second = world.register("run-2", seed=2)
    world.registry.promote(second, actor="test", reason="second")
    export_edge(world.settings, second)
    httpx.post(f"{url}/admin/reconcile", headers=admin_headers(), timeout=60)
    assert httpx.get(f"{url}/v1/edge/manifest").json()["model_version"] == second
    world.registry.rollback(actor="test", reason="bad")
    httpx.post(f"{url}/admin/reconcile", headers=admin_headers(), timeout=60)
    assert httpx.get(f"{url}/v1/edge/manifest").json()["model_version"] == champion


def test_manifest_is_404_until_a_bundle_is_exported(world: World, champion: str) -> None:
    with RunningServer(world.settings) as running:
        response = httpx.get(f"{running.url}/v1/edge/manifest")
        assert response.status_code == 404
        assert httpx.get(f"{running.url}/v1/edge/{champion}/model.onnx").status_code == 404
