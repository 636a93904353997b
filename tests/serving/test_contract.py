"""The HTTP contract of ARCHITECTURE.md against a real server, registry, ONNX model and snapshot."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.serving.builders import served_variant
from tests.serving.conftest import World, admin_headers


def test_recommend_known_user(server, world: World, champion: str) -> None:
    user = "u1"
    r = httpx.post(f"{server.url}/v1/recommend", json={"user_id": user, "k": 10, "exclude_seen": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == user and body["model_version"] == champion and body["variant"] == "champion"
    assert len(body["items"]) == 10
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    ids = [i["item_id"] for i in body["items"]]
    assert len(set(ids)) == 10 and set(ids) <= set(world.items)
    assert not set(ids) & set(world.users[user]), "seen items must be excluded"


def test_exclude_seen_false_can_return_seen_items(server, world: World) -> None:
    user = "u2"
    n = len(world.items)
    keep = httpx.post(f"{server.url}/v1/recommend", json={"user_id": user, "k": n, "exclude_seen": False}).json()
    drop = httpx.post(f"{server.url}/v1/recommend", json={"user_id": user, "k": n, "exclude_seen": True}).json()
    assert len(keep["items"]) == n
    assert len(drop["items"]) == n - len(world.users[user])
    assert set(world.users[user]) <= {i["item_id"] for i in keep["items"]}


def test_scores_match_the_model(server, world: World) -> None:
    """/v1/score gives the model's raw scores; /v1/recommend's are their softmax over the catalogue."""
    user = "u3"
    rec = httpx.post(f"{server.url}/v1/recommend", json={"user_id": user, "k": 5, "exclude_seen": False}).json()
    ids = [i["item_id"] for i in rec["items"]]
    scored = httpx.post(f"{server.url}/v1/score", json={"user_id": user, "item_ids": ids + ["not-an-item"]}).json()
    assert scored["model_version"] == rec["model_version"]
    assert scored["scores"][-1] is None
    catalogue = httpx.post(f"{server.url}/v1/score", json={"user_id": user, "item_ids": world.items}).json()["scores"]
    normaliser = sum(math.exp(s) for s in catalogue)
    shares = [math.exp(s) / normaliser for s in scored["scores"][:-1]]
    assert shares == pytest.approx([i["score"] for i in rec["items"]], rel=1e-5, abs=1e-7)


def test_cold_start_user_gets_popular_items(server, world: World) -> None:
    r = httpx.post(f"{server.url}/v1/recommend", json={"user_id": "never-seen", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert [i["item_id"] for i in body["items"]] == world.items[:5]  # popularity order of the snapshot
    assert body["reason"] == "cold_start"
    shares = [i["score"] for i in body["items"]]  # each item's share of the snapshot's interactions
    assert shares == sorted(shares, reverse=True) and 0 < shares[-1] <= shares[0] < 1
    cold_scores = httpx.post(f"{server.url}/v1/score", json={"user_id": "never-seen", "item_ids": world.items[:5]})
    assert cold_scores.json()["scores"] == pytest.approx(shares)
    personal = httpx.post(f"{server.url}/v1/recommend", json={"user_id": "u1", "k": 5}).json()
    assert personal["reason"] == "personalised"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "u1", "k": 1001}, "k"),
        ({"user_id": "u1", "k": "10"}, "k"),
        ({"user_id": 42, "k": 10}, "user_id"),
        ({"k": 10}, "user_id"),
        ({"user_id": "u1", "exclude_seen": "yes"}, "exclude_seen"),
    ],
)
def test_recommend_rejects_bad_input(server, payload: dict, field: str) -> None:
    r = httpx.post(f"{server.url}/v1/recommend", json=payload)
    assert r.status_code == 422
    assert field in r.json()["message"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_id": "u1", "item_ids": []}, "item_ids"),
        ({"user_id": "u1", "item_ids": [str(i) for i in range(10_001)]}, "item_ids"),
        ({"user_id": "u1", "item_ids": [1, 2]}, "item_ids"),
        ({"user_id": "u1", "item_ids": "i1"}, "item_ids"),
    ],
)
def test_score_rejects_bad_input(server, payload: dict, field: str) -> None:
    r = httpx.post(f"{server.url}/v1/score", json=payload)
    assert r.status_code == 422
    assert field in r.json()["message"]


def test_malformed_json_is_422(server) -> None:
    r = httpx.post(f"{server.url}/v1/recommend", content=b'{"user_id": "u1", "k": ', headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_ops_routes(server, champion: str) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["champion"] == champion
    models = httpx.get(f"{server.url}/v1/models").json()
    assert [(v["role"], v["version"], v["artifact"]) for v in models["versions"]] == [("champion", champion, served_variant()[0])]
    assert models["online"] == {"enabled": True, "backend": "embedded", "up": True, "deferred_events": 0,
                                "snapshot_as_of": None, "snapshot_log_positions": 0, "tail_cache": None}
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert "/v1/recommend" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_not_ready_without_champion(world: World) -> None:
    from tests.serving.conftest import RunningServer

    with RunningServer(world.settings) as running:
        assert httpx.get(f"{running.url}/readyz").status_code == 503
        r = httpx.post(f"{running.url}/v1/recommend", json={"user_id": "u1"})
        assert r.status_code == 503 and "Retry-After" in r.headers


def test_feedback_goes_through_the_ingestion_log(server, world: World, champion: str) -> None:
    import json

    from freshrec.core.layout import Layout

    r = httpx.post(f"{server.url}/v1/feedback", json={"user_id": "u1", "item_id": "i3", "event_type": "click",
                                                       "variant": "champion", "model_version": champion})
    assert r.status_code == 202
    assert httpx.post(f"{server.url}/v1/feedback", json={"user_id": "u1", "item_id": "i3", "event_type": "like"}).status_code == 422
    # Acknowledged = already in the log (fsynced), no flush interval to wait for.
    segments = sorted(Layout(world.home).landing.rglob("*.jsonl"))
    events = [json.loads(line) for path in segments for line in path.read_text().splitlines()]
    assert [(e["user_id"], e["item_id"], e["event_type"], e["value"], e["seq"]) for e in events] == [("u1", "i3", "click", 1.0, 1)]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'freshrec_feedback_total{{event_type="click",variant="champion",version="{champion}"}} 1.0' in metrics
    # a client-chosen version string never becomes a label value of its own (bounded cardinality)
    httpx.post(f"{server.url}/v1/feedback", json={"user_id": "u1", "item_id": "i3", "event_type": "view",
                                                   "variant": "canary", "model_version": "made-up"})
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'freshrec_feedback_total{event_type="view",variant="canary",version="other"} 1.0' in metrics
    assert "made-up" not in metrics


def test_admin_routes_need_the_token(server) -> None:
    for path in ("/admin/reconcile", "/admin/rollback"):
        assert httpx.post(f"{server.url}{path}").status_code == 401
        assert httpx.post(f"{server.url}{path}", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(f"{server.url}/admin/canary", json={"weight": 10}).status_code == 401
    ok = httpx.post(f"{server.url}/admin/reconcile", headers=admin_headers())
    assert ok.status_code == 200 and ok.json()["versions"]


def test_large_catalogue_goes_through_retrieval(world: World, champion: str) -> None:
    """Above serving.max_candidates items only the retrieval set (top by popularity) is scored."""
    from tests.serving.conftest import RunningServer

    settings = world.settings.model_copy(
        update={"serving": world.settings.serving.model_copy(update={"max_candidates": 20})}
    )
    retrieved = set(world.items[:20])  # the snapshot's popularity decreases along world.items
    with RunningServer(settings) as running, httpx.Client(base_url=running.url) as client:
        assert client.get("/v1/models").json()["versions"][0]["n_candidates"] == 20
        for user in ("u1", "u2", "u3"):
            body = client.post("/v1/recommend", json={"user_id": user, "k": 50, "exclude_seen": True}).json()
            ids = {i["item_id"] for i in body["items"]}
            assert ids == retrieved - set(world.users[user])
