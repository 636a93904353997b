"""The ingestion API's rule table (freshrec.core.events.check_event) and the Spark clean stage decide every event alike:
accepted by both, or rejected by both with the same reason.

The corpus is written as JSON lines into a raw partition, classified by ``parse_and_classify`` with the same rules
and clock, and checked one by one with ``check_event`` on the same JSON objects. One difference is by design and
left out: an event without ``ts`` gets the receiving clock from the API, while a landed row without one has no
clock to take it from (the log always carries ``ts``, so the lake never sees an API event without it).
"""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from freshrec.core.events import REASONS, EventRules, check_event
from freshrec.core.layout import Layout
from freshrec.spark.clean import CleanRules, parse_and_classify
from freshrec.spark.raw_reader import list_raw_files, read_raw
from tests.spark_jobs import rawdata

pytestmark = pytest.mark.slow
DAY = dt.date(2026, 12, 4)
NOW = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC).timestamp()  # inside the landing day: the horizon is NOW + tolerance
GOOD = {"user_id": "u1", "item_id": "i1", "event_type": "view", "value": 1, "ts": "2026-12-04T10:00:00Z"}


_DROP = object()  # a field left out of the event


def _e(**change) -> dict:
    return {k: v for k, v in {**GOOD, **change}.items() if v is not _DROP}

CORPUS: list[object] = [
    # accepted
    GOOD,
    _e(user_id=42, item_id=7, event_type="click", value=2.5, ts=int(NOW) - 7200),  # numbers, epoch as a JSON number
    _e(user_id=" u 3 ", item_id="item with spaces", event_type=" Rating ", value="4.5", ts="2026-12-04 09:30:00"),
    _e(event_type="PURCHASE", value="1e3", ts="2026-12-04T09:00:00.123456789+02:00"),
    _e(event_type="rating", value="5 ", ts="2026-12-04T08:00:00.5Z"),
    _e(ts=f"{NOW - 60:.2f}"),  # fractional epoch as a string
    _e(ts="2026-12-04T12:00:00+0530"),
    _e(ts="2026-12-04T12:00:00-05"),
    _e(ts="2026-12-04T10:00:00 UTC"),
    _e(ts="2026-12-03"),
    _e(ts="2026-12-04T10:00:00.1Z"),
    _e(ts="2026-12-4 9:5:7"),
    _e(event_id="evt-1"),
    _e(event_id="  evt 2  "),
    _e(event_id="e" * 128),
    _e(user_id=True),  # the lake reads any JSON value into a string column as its text
    _e(item_id={"a": 1}),
    _e(value=0, event_type="view"),
    # malformed_line
    '{"user_id": "u1", "item_id": ',
    "[1, 2]",
    "not json",
    # empty_id
    _e(user_id=""), _e(item_id="   "), _e(item_id=_DROP), _e(user_id=None), _e(user_id="\t\u3000"),
    _e(user_id="", event_type="like"),  # the first failing rule names the event
    # invalid_event_id
    _e(event_id=""), _e(event_id="   "), _e(event_id="e" * 129), _e(event_id="", event_type="like"),
    # unknown_event_type
    _e(event_type="like"), _e(event_type=_DROP), _e(event_type="view!"), _e(event_type="like", value="x"),
    # non_numeric_value
    _e(value="NaN"), _e(value="abc"), _e(value=_DROP), _e(value="1d"), _e(value="inf"), _e(value="0x1p3"),
    _e(value="\u0661\u0662"), _e(value="1e999"),
    # rating_out_of_range
    _e(event_type="rating", value=7.5), _e(event_type="rating", value="0.1"),
    # negative_weight
    _e(event_type="purchase", value=-3), _e(value="-0.5"),
    # unparseable_ts
    _e(ts="yesterday"), _e(ts="2026-12-04T10:00Z"), _e(ts="2026-12-04 +01:00"), _e(ts="2026-12-04T10:00:00 Europe/Paris"),
    _e(ts="1e9"), _e(ts="99999999999999"), _e(ts="2026-02-30"), _e(ts="2026-12-04T10:00:00+18:30"),
    _e(ts="\u0662\u0660\u0662\u0666-12-04"),
    # future_ts
    _e(ts=int(NOW) + 7200), _e(ts="2027-01-01T00:00:00Z"),
]


def _generated(seed: int = 11, n: int = 240) -> list[dict]:
    """Timestamps and values drawn from the grammar's edges (digit counts, zones, ranges, whitespace)."""
    rng = random.Random(seed)

    def digits(k: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(k))

    out = []
    for _ in range(n):
        year = rng.choice(['2026', '0001', '9999', '0000', digits(4)])
        ts = f"{year}-{rng.choice(['12', '2', '13', digits(2)])}-{rng.choice(['4', '04', '31', '00', digits(2)])}"
        if rng.random() < 0.8:
            ts += rng.choice("T ") + f"{rng.choice(['10', '9', '24', digits(2)])}:{rng.choice(['00', '5', '60', digits(2)])}"
            if rng.random() < 0.7:
                ts += f":{rng.choice(['00', '7', '60', digits(2)])}" + (f".{digits(rng.randint(1, 10))}" if rng.random() < 0.4 else "")
        if rng.random() < 0.5:
            ts += rng.choice(["", " "]) + rng.choice(["Z", "UTC", "+01:00", "-0530", "+18", "+18:01", "-19", f"+{digits(2)}"])
        if rng.random() < 0.1:
            ts = rng.choice([" ", "\t"]) + ts + rng.choice([" ", "\n"])
        value = rng.choice(["1", "1.", ".5", "+.5", "-1e3", "1e", "1_0", "2 ", " 3.25", "1E+2", "e3", ".", "5d"])
        out.append(_e(event_type=rng.choice(["view", "rating"]), value=value, ts=ts))
        out.append(_e(ts=rng.choice([digits(rng.randint(1, 10)), f"-{digits(rng.randint(1, 13))}", f"{digits(10)}.{digits(3)}"])))
    return out


def test_api_rules_and_clean_stage_agree(spark, settings):
    corpus = CORPUS + _generated()
    lines = [item if isinstance(item, str) else json.dumps(item) for item in corpus]
    rawdata.write_jsonl(settings.home, DAY, lines)
    d = settings.data
    raw_root = Layout(settings.home).raw_events
    raw = read_raw(spark, list_raw_files(raw_root, [DAY]), raw_root)
    rows = parse_and_classify(raw, CleanRules(d.rating_min, d.rating_max, d.future_ts_tolerance_s, NOW)).collect()

    assert len(rows) == len(corpus)  # one small file, one task: rows come back in line order
    rules = EventRules.from_settings(d)
    decided = []
    for item, line, row in zip(corpus, lines, rows):
        if isinstance(item, dict) and isinstance(item.get("user_id"), str):
            assert row["raw_user_id"] == item["user_id"], "rows out of line order"
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = line
        _, reason = check_event(event, rules, NOW)
        decided.append(reason)
        assert row["reason"] == reason, f"{line!r}: clean stage says {row['reason']}, the API's rules say {reason}"
    assert set(decided) == {*REASONS, None}  # every rule and acceptance exercised
    assert sum(r is None for r in decided) >= 18
