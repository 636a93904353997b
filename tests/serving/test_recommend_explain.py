"""/v1/recommend's reasons, its one score scale and its explanations, against a real server and ONNX model.

Every expected number is recomputed here with the served int8 ONNX scorer called directly: a contribution is
checked by re-scoring the history without that item, not by trusting the server's arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from freshrec.core.layout import Layout
from freshrec.serving.explain import explanation_rows, top_contributors
from tests.helpers.net import free_port
from tests.serving.builders import write_snapshot
from tests.serving.conftest import N_ITEMS, RunningServer, World

GHOST = "ghost"  # in the snapshot, but with items only: none of them in the model's vocabulary
BASE_KEYS = {"user_id", "items", "model_version", "variant", "reason", "snapshot_only"}


def _with_ghost(world: World) -> None:
    users = {**world.users, GHOST: ["retired-1", "retired-2"]}
    popularity = {item: float(N_ITEMS - n) for n, item in enumerate(world.items)}
    write_snapshot(Layout(world.settings.home).online, "snap-2", users, popularity)


@pytest.fixture
def app_server(world: World, champion: str) -> Iterator[RunningServer]:
    _with_ghost(world)
    with RunningServer(world.settings) as running:
        yield running


def recommend(url: str, **body) -> dict:
    r = httpx.post(f"{url}/v1/recommend", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def shares_for(server: RunningServer, histories: list[list[int]]) -> np.ndarray:
    """[len(histories), n_candidates]: the softmax share of every candidate, straight from the served scorer."""
    served = server.runtime.table.champion
    width = max(1, max(len(h) for h in histories))
    matrix = np.zeros((len(histories), width), dtype=np.int64)
    for row, history in enumerate(histories):
        if history:
            matrix[row, width - len(history):] = history
    scores = served.model.scorer.score(matrix, np.broadcast_to(served.candidates, (len(histories), served.candidates.size)).copy())
    scores = scores.astype(np.float64)
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def tied_pair(server: RunningServer) -> tuple[int, int, int]:
    """Items (x, filler, y): with history [x, filler], y is the top recommendation and x its main cause."""
    served = server.runtime.table.champion
    pos = served.candidate_pos
    items = served.candidates.tolist()
    alone = shares_for(server, [[i] for i in items])
    # Pairs by how strongly x alone points at y (y != x), strongest first.
    pairs = sorted(((alone[a, pos[y]], x, y) for a, x in enumerate(items) for y in items if y != x), reverse=True)
    for _, x, y in pairs[:50]:
        fillers = [f for f in items if f not in (x, y)]
        full = shares_for(server, [[x, f] for f in fillers])
        without_x = shares_for(server, [[f] for f in fillers])
        without_f = alone[[items.index(x)] * len(fillers)]
        for row, f in enumerate(fillers):
            ranked = [items[p] for p in np.argsort(-full[row]) if items[p] not in (x, f)]
            drop_x, drop_f = full[row, pos[y]] - without_x[row, pos[y]], full[row, pos[y]] - without_f[row, pos[y]]
            if ranked[0] == y and drop_x > 2 * max(drop_f, 0) and drop_x > 0.01:
                return x, f, y
    raise AssertionError("the test model has no strongly tied pair")


def count_ort_rows(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows of every ORT call the champion's scorer makes from now on."""
    scorer = server.runtime.table.champion.model.scorer
    calls: list[int] = []
    original = scorer.score

    def counted(history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        calls.append(history.shape[0])
        return original(history, candidates)

    monkeypatch.setattr(scorer, "score", counted)
    return calls


def test_explain_contributions_are_the_drop_when_the_item_is_left_out(app_server: RunningServer, world: World) -> None:
    server = app_server
    served = server.runtime.table.champion
    x, filler, y = tied_pair(server)
    item_id = served.model.item_ids
    user = "explained"
    events = [{"user_id": user, "item_id": item_id[i - 1], "event_type": "click", "value": 1} for i in (x, filler)]
    assert httpx.post(f"{server.url}/v1/events", json={"events": events}).json()["accepted"] == 2

    body = recommend(server.url, user_id=user, k=5, explain=True)
    assert body["reason"] == "personalised" and body["snapshot_only"] is False
    top = body["items"][0]
    assert top["item_id"] == item_id[y - 1]
    assert [c["item_id"] for c in top["contributors"]] == [item_id[x - 1], item_id[filler - 1]]

    full, without_x, without_filler = shares_for(server, [[x, filler], [filler], [x]])
    pos = served.candidate_pos
    assert top["score"] == pytest.approx(full[pos[y]], rel=1e-5)
    by_id = {c["item_id"]: c["contribution"] for c in top["contributors"]}
    # Removing the top contributor lowers y's score by exactly its contribution (direct ONNX re-score).
    assert top["score"] - by_id[item_id[x - 1]] == pytest.approx(without_x[pos[y]], rel=1e-4, abs=1e-7)
    assert top["score"] - by_id[item_id[filler - 1]] == pytest.approx(without_filler[pos[y]], rel=1e-4, abs=1e-7)
    assert by_id[item_id[x - 1]] > 0.01
    for entry in body["items"]:  # every item is explained by the history, largest contribution first
        contributions = [c["contribution"] for c in entry["contributors"]]
        assert {c["item_id"] for c in entry["contributors"]} == {item_id[x - 1], item_id[filler - 1]}
        assert contributions == sorted(contributions, reverse=True)


def test_explain_keeps_at_most_three_contributors(app_server: RunningServer, world: World) -> None:
    user = max(world.users, key=lambda u: len(world.users[u]))
    body = recommend(app_server.url, user_id=user, k=3, explain=True)
    plain = recommend(app_server.url, user_id=user, k=3)
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in plain["items"]]
    for entry in body["items"]:
        assert len(entry["contributors"]) == 3
        assert {c["item_id"] for c in entry["contributors"]} <= set(world.users[user])


def test_explain_false_is_unchanged_in_shape_and_cost(app_server: RunningServer, world: World,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rows = count_ort_rows(app_server, monkeypatch)
    body = recommend(app_server.url, user_id="u1", k=5)
    assert set(body) == BASE_KEYS
    assert all(set(item) == {"item_id", "score"} for item in body["items"])
    assert rows == [1], "one ORT call of one row, nothing else"
    assert recommend(app_server.url, user_id="u1", k=5, explain=False) == body

    rows.clear()
    explained = recommend(app_server.url, user_id="u1", k=5, explain=True)
    history = len(world.users["u1"])
    # The answer, then one call: the full history again beside each of its leave-one-out rows.
    assert rows == [1, 1 + history]
    assert [i["item_id"] for i in explained["items"]] == [i["item_id"] for i in body["items"]]
    assert [i["score"] for i in explained["items"]] == pytest.approx([i["score"] for i in body["items"]])


def test_scores_are_probabilities_on_one_scale(app_server: RunningServer, world: World) -> None:
    everything = recommend(app_server.url, user_id="u2", k=N_ITEMS, exclude_seen=False)
    assert sum(i["score"] for i in everything["items"]) == pytest.approx(1.0, rel=1e-4)
    assert all(0 < i["score"] < 1 for i in everything["items"])
    cold = recommend(app_server.url, user_id="nobody", k=N_ITEMS, exclude_seen=False)
    assert sum(i["score"] for i in cold["items"]) == pytest.approx(1.0, rel=1e-4)


def test_each_reason_in_its_situation(app_server: RunningServer, world: World) -> None:
    url = app_server.url
    normal = recommend(url, user_id="u1", k=5, explain=True)
    assert (normal["reason"], normal["snapshot_only"]) == ("personalised", False)

    unknown = recommend(url, user_id="never-seen", k=5, explain=True)
    assert (unknown["reason"], unknown["snapshot_only"]) == ("cold_start", False)
    assert [i["item_id"] for i in unknown["items"]] == world.items[:5]
    assert all(i["contributors"] == [] for i in unknown["items"])

    ghost = recommend(url, user_id=GHOST, k=5)
    assert (ghost["reason"], ghost["snapshot_only"]) == ("fallback", False)
    assert [i["item_id"] for i in ghost["items"]] == world.items[:5]

    # Known only through live events, all on items the model does not know: also a fallback.
    event = {"user_id": "newcomer", "item_id": "brand-new-item", "event_type": "click", "value": 1}
    assert httpx.post(f"{url}/v1/events", json={"events": [event]}).json()["accepted"] == 1
    assert recommend(url, user_id="newcomer", k=5)["reason"] == "fallback"


def test_a_down_store_marks_the_answer_snapshot_only(world: World, champion: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from freshrec.core.settings import get_settings

    _with_ghost(world)
    monkeypatch.setenv("FRESHREC_ONLINE__STORE_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    get_settings.cache_clear()
    with RunningServer(get_settings()) as server:
        for user, reason in (("u1", "personalised"), ("never-seen", "cold_start"), (GHOST, "fallback")):
            body = recommend(server.url, user_id=user, k=5)
            assert (body["reason"], body["snapshot_only"]) == (reason, True), user
        explained = recommend(server.url, user_id="u1", k=5, explain=True)
        assert explained["snapshot_only"] is True and explained["items"][0]["contributors"]


@pytest.mark.parametrize("explain", ["yes", 1, None, "true"])
def test_a_bad_explain_is_a_422_naming_the_field(app_server: RunningServer, explain: object) -> None:
    r = httpx.post(f"{app_server.url}/v1/recommend", json={"user_id": "u1", "explain": explain})
    assert r.status_code == 422
    assert r.json()["message"].startswith("explain: ") and "boolean" in r.json()["message"]


def test_explanation_rows_leave_each_item_out_right_aligned() -> None:
    rows = explanation_rows(np.array([7, 8, 9]))
    assert rows.tolist() == [[7, 8, 9], [0, 8, 9], [0, 7, 9], [0, 7, 8]]
    assert explanation_rows(np.array([5])).tolist() == [[5], [0]]


def test_top_contributors_rank_each_column_and_skip_non_finite() -> None:
    history = np.array([7, 8, 9, 10])
    contributions = np.array([[0.1, -0.2], [0.3, np.nan], [-0.05, 0.4], [0.2, 0.0]])
    assert top_contributors(history, contributions, top=3) == [
        [(8, 0.3), (10, 0.2), (7, 0.1)], [(9, 0.4), (10, 0.0), (7, -0.2)]]
