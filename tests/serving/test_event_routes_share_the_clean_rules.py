"""POST /v1/events and /v1/feedback judge values by the clean stage's rules built from the same settings
(``data.rating_min``/``rating_max``): strict finite numbers and each event type's range, on a running app."""

from __future__ import annotations

import httpx
import pytest

from tests.serving.conftest import RunningServer

NON_FINITE_BODIES = (b'{"user_id":"u1","item_id":"i1","event_type":"click","value":NaN}',
                     b'{"user_id":"u1","item_id":"i1","event_type":"click","value":Infinity}',
                     b'{"user_id":"u1","item_id":"i1","event_type":"rating","value":-Infinity}',
                     b'{"user_id":"u1","item_id":"i1","event_type":"view","value":1e999}')


@pytest.fixture(autouse=True)
def narrow_ratings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ratings 1..4 instead of the default 0.5..5: the routes must follow the settings, not a copy of the defaults."""
    monkeypatch.setenv("FRESHREC_DATA__RATING_MIN", "1")
    monkeypatch.setenv("FRESHREC_DATA__RATING_MAX", "4")


def _event(event_type: str, value: object) -> dict:
    return {"user_id": "u1", "item_id": "i1", "event_type": event_type, "value": value}


def test_events_are_rejected_by_the_shared_rules(server: RunningServer) -> None:
    batch = [_event("rating", 4.5), _event("rating", 0.7), _event("click", -1), _event("view", "NaN"),
             _event("purchase", "Infinity"), _event("rating", "1e999"), _event("rating", 4), _event("click", 1e300)]
    r = httpx.post(f"{server.url}/v1/events", json={"events": batch})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    assert r.json()["rejected"] == [
        {"index": 0, "reason": "rating_out_of_range"}, {"index": 1, "reason": "rating_out_of_range"},
        {"index": 2, "reason": "negative_weight"}, {"index": 3, "reason": "non_numeric_value"},
        {"index": 4, "reason": "non_numeric_value"}, {"index": 5, "reason": "non_numeric_value"}]


@pytest.mark.parametrize("body", NON_FINITE_BODIES)
def test_non_finite_json_numbers_never_reach_the_log(server: RunningServer, body: bytes) -> None:
    """JSON has no NaN or Infinity: /v1/events refuses such a body as not JSON; /v1/feedback, whose parser
    reads them, rejects the value by the shared rule."""
    events = httpx.post(f"{server.url}/v1/events", content=b'{"events":[' + body + b"]}",
                        headers={"content-type": "application/json"})
    assert events.status_code == 400, events.text
    feedback = httpx.post(f"{server.url}/v1/feedback", content=body, headers={"content-type": "application/json"})
    assert feedback.status_code == 422 and "non_numeric_value" in feedback.json()["message"], feedback.text


@pytest.mark.parametrize(("event", "reason"), [
    (_event("rating", 4.5), "rating_out_of_range"), (_event("rating", 0.5), "rating_out_of_range"),
    (_event("click", -0.5), "negative_weight")])
def test_feedback_follows_each_types_range(server: RunningServer, event: dict, reason: str) -> None:
    r = httpx.post(f"{server.url}/v1/feedback", json=event)
    assert r.status_code == 422 and reason in r.json()["message"], r.text
    assert httpx.post(f"{server.url}/v1/feedback", json=_event("rating", 4)).status_code == 202
