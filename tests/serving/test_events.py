"""POST /v1/events end to end on a real server, against both online store backends.

Every test reads what the model really computes for the merged history (the served ONNX scorer, called
directly) and compares it with what the HTTP API answered.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from freshrec.core.layout import Layout
from tests.online.conftest import REDIS_URL
from tests.serving.conftest import RunningServer, World


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FRESHREC_ONLINE__NAMESPACE", f"test-{uuid.uuid4().hex[:10]}")
    if request.param == "redis":
        monkeypatch.setenv("FRESHREC_ONLINE__STORE_URL", REDIS_URL)
    return request.param


@pytest.fixture
def live(backend: str, world: World, champion: str) -> Iterator[RunningServer]:
    with RunningServer(world.settings) as running:
        yield running


def expected_items(server: RunningServer, history: list[str], exclude: set[str], k: int) -> list[str]:
    """The top k the champion computes for this history (oldest first), the excluded items removed."""
    served = server.runtime.table.champion
    index = served.model.item_index
    scores = served.model.scorer.score(np.array([[index[i] for i in history]]), served.candidates[None, :])[0]
    ranked = [served.model.item_ids[served.candidates[p] - 1] for p in np.argsort(-scores, kind="stable")]
    return [item for item in ranked if item not in exclude][:k]


def recommend(url: str, user: str, k: int = 5, exclude_seen: bool = True) -> list[str]:
    # A new connection per call: nothing is carried over between requests but the store.
    r = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": k, "exclude_seen": exclude_seen})
    assert r.status_code == 200, r.text
    return [entry["item_id"] for entry in r.json()["items"]]


def post(url: str, *events: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/v1/events", json={"events": list(events)}, **kwargs)


def click(user: str, item: str, **extra) -> dict:
    return {"user_id": user, "item_id": item, "event_type": "click", "value": 1, **extra}


def logged(world: World) -> list[dict]:
    return [json.loads(line) for path in sorted(Layout(world.home).landing.rglob("*.jsonl"))
            for line in path.read_text().splitlines()]


def test_a_new_user_is_personalised_by_the_next_request(live: RunningServer, world: World) -> None:
    cold = recommend(live.url, "newcomer")
    r = post(live.url, click("newcomer", "i7"), click("newcomer", "i9", ts="2026-01-01T00:00:00Z"))
    assert r.status_code == 200 and r.json() == {"accepted": 2, "rejected": [], "visible": True}
    got = recommend(live.url, "newcomer")
    # history in event-time order: i9 (older ts) then i7
    assert got == expected_items(live, ["i9", "i7"], {"i7", "i9"}, 5) and got != cold
    assert recommend(live.url, "newcomer", exclude_seen=False) == expected_items(live, ["i9", "i7"], set(), 5)


def test_a_known_users_live_tail_extends_their_snapshot_history(live: RunningServer, world: World) -> None:
    user = "u3"
    snapshot = world.users[user]
    fresh = [i for i in world.items if i not in snapshot][:2]
    again = snapshot[0]  # an item already in the snapshot moves to its new, latest position
    assert post(live.url, click(user, fresh[0]), click(user, again), click(user, fresh[1])).status_code == 200
    history = [i for i in snapshot if i != again] + [fresh[0], again, fresh[1]]
    assert recommend(live.url, user) == expected_items(live, history, set(snapshot) | set(fresh), 5)
    scores = httpx.post(f"{live.url}/v1/score", json={"user_id": user, "item_ids": ["i1", "i2"]}).json()["scores"]
    served = live.runtime.table.champion
    want = served.model.scorer.score(np.array([[served.model.item_index[i] for i in history]]), np.array([[1, 2]]))[0]
    assert np.allclose(scores, want, atol=1e-6)


def test_accepted_events_are_in_the_log_before_the_answer(live: RunningServer, world: World) -> None:
    r = post(live.url, click("u1", "i2", event_id="client-1"), click("u1", "unknown-item"))
    assert r.json()["accepted"] == 2
    events = logged(world)
    assert [(e["user_id"], e["item_id"], e["event_id"]) for e in events][0] == ("u1", "i2", "client-1")
    assert len(events[1]["event_id"]) == 32  # made by the server
    assert [e["seq"] for e in events] == [1, 2] and events[0]["writer"] == events[1]["writer"]
    # the unknown item is logged, counted, and skipped in scoring
    metrics = httpx.get(f"{live.url}/metrics").text
    assert "freshrec_unknown_item_events_total 1.0" in metrics
    assert 'freshrec_events_accepted_total{event_type="click"} 2.0' in metrics
    snapshot = world.users["u1"]
    assert recommend(live.url, "u1") == expected_items(live, snapshot + ["i2"], set(snapshot) | {"i2"}, 5)


BAD_EVENTS = [
    ("not an object", ["u", "i"], "malformed_line"),
    ("blank user", click(" ", "i1"), "empty_id"),
    ("missing item", {"user_id": "u1", "event_type": "click", "value": 1}, "empty_id"),
    ("blank event_id", click("u1", "i1", event_id=" "), "invalid_event_id"),
    ("unknown type", {**click("u1", "i1"), "event_type": "like"}, "unknown_event_type"),
    ("text value", {**click("u1", "i1"), "value": "lots"}, "non_numeric_value"),
    ("rating 7", {**click("u1", "i1"), "event_type": "rating", "value": 7}, "rating_out_of_range"),
    ("negative weight", {**click("u1", "i1"), "value": -2}, "negative_weight"),
    ("unparseable ts", click("u1", "i1", ts="last tuesday"), "unparseable_ts"),
    ("future ts", click("u1", "i1", ts="2031-01-01T00:00:00Z"), "future_ts"),
]


def test_bad_events_are_rejected_by_reason_and_good_ones_kept(live: RunningServer, world: World) -> None:
    events = [click("u2", "i4")] + [event for _, event, _ in BAD_EVENTS] + [click("u2", "i5")]
    r = post(live.url, *events)
    assert r.status_code == 200
    assert r.json()["accepted"] == 2
    assert r.json()["rejected"] == [{"index": n + 1, "reason": reason} for n, (_, _, reason) in enumerate(BAD_EVENTS)]
    assert [(e["user_id"], e["item_id"]) for e in logged(world)] == [("u2", "i4"), ("u2", "i5")]
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'freshrec_events_rejected_total{reason="future_ts"} 1.0' in metrics


def test_body_faults_get_their_status_and_nothing_is_accepted(backend: str, world: World, champion: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_SERVING__MAX_EVENTS_PER_REQUEST", "3")
    monkeypatch.setenv("FRESHREC_INGEST_TOKEN", "ingest-secret")
    from freshrec.core.settings import get_settings

    get_settings.cache_clear()
    auth = {"authorization": "Bearer ingest-secret"}
    with RunningServer(get_settings()) as server, httpx.Client(base_url=server.url) as client:
        def status(content: bytes, headers: dict | None = None) -> tuple[int, str]:
            r = client.post("/v1/events", content=content, headers={"content-type": "application/json", **auth, **(headers or {})})
            return r.status_code, r.json().get("message", "")

        good = json.dumps({"events": [click("u1", "i1")]}).encode()
        assert client.post("/v1/events", content=good, headers={"content-type": "application/json"}).status_code == 401
        assert status(good, {"authorization": "Bearer wrong"})[0] == 401
        assert status(b'{"events": [')[0] == 400
        assert status(good, {"content-type": "text/plain"})[0] == 415
        assert status(b'{"events": {}}') == (422, "events: expected a list of event objects")
        assert status(b'{"events": []}')[0] == 422
        assert status(b'[1, 2]')[0] == 422
        assert status(b'{"events": [], "extra": 1}')[0] == 422
        assert status(json.dumps({"events": [click("u1", "i1")] * 4}).encode())[0] == 413
        assert status(b'{"events": ["' + b"x" * (2 << 20) + b'"]}')[0] == 413
        assert not logged(world), "a faulty body accepts nothing"
        assert status(good) == (200, "")
        assert len(logged(world)) == 1


def test_read_your_writes_across_two_servers_sharing_the_store(backend: str, world: World, champion: str) -> None:
    """Two serving processes' worth of state (own runtime, log, store connection) behind two ports."""
    with RunningServer(world.settings) as a, RunningServer(world.settings) as b:
        for n in range(30):
            user, item = f"fresh-{n}", world.items[n % len(world.items)]
            assert post(a.url, click(user, item)).status_code == 200
            assert recommend(b.url, user) == expected_items(b, [item], {item}, 5)
        writers = {e["writer"] for e in logged(world)}
        assert len(writers) == 1  # every event went through a's log


def test_the_cache_never_answers_with_a_list_older_than_the_latest_event(backend: str, world: World, champion: str) -> None:
    settings = world.settings.model_copy(update={"serving": world.settings.serving.model_copy(update={"cache_ttl_s": 600.0})})
    with RunningServer(settings) as a, RunningServer(settings) as b:
        first = recommend(a.url, "u5")
        assert recommend(a.url, "u5") == first  # cached
        top = first[0]
        assert post(b.url, click("u5", top)).status_code == 200  # through the other server
        after = recommend(a.url, "u5")
        assert top not in after
        history = world.users["u5"] + [top]
        assert after == expected_items(a, history, set(history), 5)


def test_a_covered_live_entry_is_not_counted_twice(live: RunningServer, world: World) -> None:
    """Once a snapshot's watermark covers an entry, the merge skips it (the snapshot already has it)."""
    from dataclasses import replace

    from freshrec.core.events import Watermark

    assert post(live.url, click("u6", "i40")).status_code == 200
    writer = logged(world)[0]["writer"]
    served = live.runtime.table.champion
    covered = replace(served.users, watermark=Watermark("2099-01-01", float("inf"), {writer: 1}))
    live.runtime.reconciler.table = replace(live.runtime.table, champion=replace(served, users=covered))
    # the snapshot (unchanged here) lacks i40, so a covered entry is simply absent from the history
    snapshot = world.users["u6"]
    assert recommend(live.url, "u6", exclude_seen=False) == expected_items(live, snapshot, set(), 5)


def test_a_down_store_costs_freshness_never_events(world: World, champion: str, tmp_path, monkeypatch) -> None:
    """Redis down: recommend answers from the snapshot; the first batch is logged and re-applied later;
    then ingestion refuses (503 + Retry-After) until Redis answers again."""
    import subprocess
    import time

    from tests.helpers.net import free_port

    port = free_port()
    monkeypatch.setenv("FRESHREC_ONLINE__STORE_URL", f"redis://127.0.0.1:{port}/0")
    from freshrec.core.settings import get_settings

    get_settings.cache_clear()
    with RunningServer(get_settings()) as server:
        first = post(server.url, click("u7", "i11"))
        assert first.status_code == 200 and first.json() == {"accepted": 1, "rejected": [], "visible": False}
        refused = post(server.url, click("u7", "i12"))
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        snapshot = world.users["u7"]
        assert recommend(server.url, "u7") == expected_items(server, snapshot, set(snapshot), 5)
        assert [e["item_id"] for e in logged(world)] == ["i11"]  # the refused one was never logged
        redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while post(server.url, click("u7", "i12")).status_code != 200:
                assert time.monotonic() < deadline, "ingestion never came back with the store"
                time.sleep(0.2)
            history = snapshot + ["i11", "i12"]
            assert recommend(server.url, "u7") == expected_items(server, history, set(history), 5)
            assert 'freshrec_online_store_up 1.0' in httpx.get(f"{server.url}/metrics").text
        finally:
            redis.terminate()
            redis.wait(timeout=10)


@pytest.mark.slow
def test_acknowledged_events_survive_kill_9(world: World, champion: str) -> None:
    """`freshrec serve` killed with SIGKILL right after answering: every acknowledged event is in the log
    once, and the next start seals the dead writer's segment for the landing stream."""
    import os
    import signal
    import subprocess
    import sys

    from freshrec.tools.bench.processes import free_port, wait_ready

    def start() -> tuple[subprocess.Popen, str]:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "freshrec.cli", "serve", "--port", str(port), "--workers", "1"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, url, timeout_s=90)
        return process, url

    acknowledged: list[str] = []
    for round_ in range(2):
        process, url = start()
        with httpx.Client(base_url=url) as client:
            for n in range(20):
                ids = [f"r{round_}-{n}-{j}" for j in range(10)]
                r = client.post("/v1/events", json={"events": [click(f"k{j}", "i1", event_id=i) for j, i in enumerate(ids)]})
                assert r.json()["accepted"] == 10
                acknowledged += ids
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    process, url = start()  # its start-up seals the orphans
    try:
        layout = Layout(world.home)
        sealed = [json.loads(line) for p in layout.landing.glob("*.jsonl") for line in p.read_text().splitlines()]
        assert sorted(e["event_id"] for e in sealed) == sorted(acknowledged)
        assert len({e["writer"] for e in sealed}) == 2
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
