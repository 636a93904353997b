"""The shared rule table, as the ingestion API applies it (parity with Spark: tests/spark_jobs/test_rule_parity.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from freshrec.core.events import REASONS, EventRules, Watermark, check_event, parse_ts

RULES = EventRules(rating_min=0.5, rating_max=5.0, future_tolerance_s=3600)
NOW = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC).timestamp()
GOOD = {"user_id": "42", "item_id": "50", "event_type": "click", "value": 1}


@pytest.mark.parametrize(("change", "reason"), [
    ({"user_id": "  "}, "empty_id"),
    ({"item_id": None}, "empty_id"),
    ({"event_id": ""}, "invalid_event_id"),
    ({"event_id": "x" * 129}, "invalid_event_id"),
    ({"event_type": "like"}, "unknown_event_type"),
    ({"value": "abc"}, "non_numeric_value"),
    ({"value": "NaN"}, "non_numeric_value"),
    ({"value": None}, "non_numeric_value"),
    ({"event_type": "rating", "value": 7}, "rating_out_of_range"),
    ({"value": -1}, "negative_weight"),
    ({"ts": "yesterday"}, "unparseable_ts"),
    ({"ts": "2026-13-01"}, "unparseable_ts"),
    ({"ts": "2031-01-01T00:00:00Z"}, "future_ts"),
    ({"value": True}, "non_numeric_value"),  # the lake reads JSON true as the text "true"
    ({"value": [1]}, "non_numeric_value"),
])
def test_each_rule_names_its_reason(change: dict, reason: str) -> None:
    assert reason in REASONS
    assert check_event({**GOOD, **change}, RULES, NOW) == (None, reason)


def test_not_an_object_is_malformed() -> None:
    assert check_event(["42", "50"], RULES, NOW) == (None, "malformed_line")


def test_a_good_event_is_normalised() -> None:
    event, reason = check_event({"user_id": 42, "item_id": " 50 ", "event_type": " Click ", "value": "2",
                                 "ts": "2026-03-01T11:00:00+01:00", "event_id": " e1 "}, RULES, NOW)
    assert reason is None
    assert (event.user_id, event.item_id, event.event_type, event.value, event.event_id) == ("42", "50", "click", 2.0, "e1")
    assert event.ts == dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC).timestamp()
    assert check_event(GOOD, RULES, NOW)[0].ts == NOW  # ts defaults to the receiving clock


def test_timestamps_in_the_forms_the_lake_reads() -> None:
    base = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
    assert parse_ts("2026-03-01") == base
    assert parse_ts("2026-3-1 00:00:01") == base + 1
    assert parse_ts("2026-03-01T00:00:00.5Z") == base + 0.5
    assert parse_ts(str(int(base))) == base
    assert parse_ts("1e9") is None


def test_watermark_covers_by_writer_sequence_and_day() -> None:
    wm = Watermark("2026-03-01", 2_000.0, {"w1": 10})
    assert wm.covers("w1", 10, 1_999.0)
    assert not wm.covers("w1", 11, 1_000.0)
    assert not wm.covers("w1", 5, 2_000.0)  # after the snapshot's day: stays live
    assert not wm.covers("w2", 1, 1_000.0)
    assert not Watermark().covers("w1", 1, 0.0)
