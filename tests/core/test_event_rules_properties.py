"""Properties of the event validator (freshrec.core.events.check_event), the rules POST /v1/events,
/v1/feedback and the Spark clean stage share: whatever a client sends, an event is either rejected with a
named reason or accepted as a normalised event with a finite value inside its type's range."""

from __future__ import annotations

import datetime as dt
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.core.events import (
    NEGATIVE_WEIGHT,
    NON_NUMERIC_VALUE,
    RATING_OUT_OF_RANGE,
    REASONS,
    EventRules,
    check_event,
)
from freshrec.core.schemas import EVENT_TYPES

RULES = EventRules(rating_min=0.5, rating_max=5.0, future_tolerance_s=3600)
NOW = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC).timestamp()

NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf, "NaN", "nan", "-nan", "Infinity", "-Infinity", "inf",
                              " +inf ", "1e999", "-1e999"])
ids = st.one_of(st.none(), st.text(max_size=8), st.integers(), st.floats(), st.booleans())
event_types = st.one_of(st.sampled_from(EVENT_TYPES), st.sampled_from([t.upper() + " " for t in EVENT_TYPES]),
                        st.text(max_size=10), st.none(), st.integers())
values = st.one_of(st.floats(), st.integers(), NON_FINITE, st.text(max_size=12), st.none(), st.booleans(),
                   st.floats().map(repr), st.lists(st.integers(), max_size=2))
timestamps = st.one_of(st.none(), st.floats(), st.integers(), st.text(max_size=25),
                       st.datetimes(timezones=st.just(dt.UTC)).map(lambda d: d.isoformat()))
events = st.fixed_dictionaries({"user_id": ids, "item_id": ids, "event_type": event_types, "value": values},
                               optional={"ts": timestamps, "event_id": ids})


def _good(event_type: str, value: object) -> dict:
    return {"user_id": "u1", "item_id": "i1", "event_type": event_type, "value": value}


@settings(max_examples=400, deadline=None)
@given(events)
def test_an_event_is_either_rejected_by_name_or_accepted_in_range(event: dict) -> None:
    clean, reason = check_event(event, RULES, NOW)
    assert (clean is None) != (reason is None)
    if clean is None:
        assert reason in REASONS
        return
    low, high = RULES.value_range(clean.event_type)
    assert clean.event_type in EVENT_TYPES
    assert math.isfinite(clean.value) and low <= clean.value <= high
    assert math.isfinite(clean.ts) and clean.ts <= NOW + RULES.future_tolerance_s
    assert clean.user_id and clean.user_id == clean.user_id.strip() and clean.item_id == clean.item_id.strip()


@settings(max_examples=200, deadline=None)
@given(events)
def test_an_accepted_event_is_accepted_again_unchanged(event: dict) -> None:
    """What the log stores (the normalised event) passes the same rules to the same event: the clean stage
    reading it back agrees with the API that accepted it."""
    clean, _ = check_event(event, RULES, NOW)
    if clean is not None:
        again = {"user_id": clean.user_id, "item_id": clean.item_id, "event_type": clean.event_type,
                 "value": clean.value, "ts": clean.ts, **({"event_id": clean.event_id} if clean.event_id else {})}
        assert check_event(again, RULES, NOW) == (clean, None)


@given(st.sampled_from(EVENT_TYPES), NON_FINITE)
def test_no_non_finite_value_is_accepted_for_any_type(event_type: str, value: object) -> None:
    assert check_event(_good(event_type, value), RULES, NOW) == (None, NON_NUMERIC_VALUE)


@given(st.sampled_from(EVENT_TYPES), st.floats(allow_nan=False, allow_infinity=False))
def test_each_type_accepts_exactly_its_value_range(event_type: str, value: float) -> None:
    clean, reason = check_event(_good(event_type, value), RULES, NOW)
    low, high = RULES.value_range(event_type)
    if low <= value <= high:
        assert clean is not None and clean.value == value
    else:
        assert reason == (RATING_OUT_OF_RANGE if event_type == "rating" else NEGATIVE_WEIGHT)
