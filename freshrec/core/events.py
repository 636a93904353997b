"""The per-event rule table, shared by the ingestion API and the Spark clean stage, and the log watermark.

An event is checked in rule order; the first rule it breaks names it (the reason). The Spark clean stage
(``freshrec.spark.clean``) applies the same rules, in the same order and with the same names, to landed rows,
so an event ``POST /v1/events`` rejects is one the clean stage would quarantine, and vice versa
(tests/spark_jobs/test_rule_parity.py). Values follow the lake's reading of a JSON event: ids and
strings are trimmed, numbers may come as JSON numbers or numeric strings, ``ts`` is ISO-8601 (UTC when
no zone is given) or epoch seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from freshrec.core.schemas import EVENT_TYPES

# Reasons, in the order they are checked (the first failing rule names the event).
MALFORMED = "malformed_line"
EMPTY_ID = "empty_id"
INVALID_EVENT_ID = "invalid_event_id"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
NON_NUMERIC_VALUE = "non_numeric_value"
RATING_OUT_OF_RANGE = "rating_out_of_range"
NEGATIVE_WEIGHT = "negative_weight"
UNPARSEABLE_TS = "unparseable_ts"
FUTURE_TS = "future_ts"
REASONS: Final = (MALFORMED, EMPTY_ID, INVALID_EVENT_ID, UNKNOWN_EVENT_TYPE, NON_NUMERIC_VALUE, RATING_OUT_OF_RANGE,
                  NEGATIVE_WEIGHT, UNPARSEABLE_TS, FUTURE_TS)
RULES: Final = {
    MALFORMED: "the event is not a JSON object (in the lake: the line does not parse)",
    EMPTY_ID: "user_id or item_id is missing or blank",
    INVALID_EVENT_ID: f"event_id, when given, is blank or longer than {128} characters",
    UNKNOWN_EVENT_TYPE: f"event_type is not one of {', '.join(EVENT_TYPES)}",
    NON_NUMERIC_VALUE: "value is missing, not a number, NaN or infinite",
    RATING_OUT_OF_RANGE: "a rating's value lies outside [data.rating_min, data.rating_max]",
    NEGATIVE_WEIGHT: "a view/click/purchase has a negative value",
    UNPARSEABLE_TS: "ts is neither ISO-8601 nor epoch seconds",
    FUTURE_TS: "ts lies further in the future than data.future_ts_tolerance_s",
}
MAX_EVENT_ID_LENGTH: Final = 128
EVENT_FIELDS: Final = ("user_id", "item_id", "event_type", "value", "ts", "event_id")

# ASCII digits only (Python's \d also matches other scripts' digits, which Spark does not read as numbers).
_EPOCH = re.compile(r"^-?\d+(\.\d+)?$", re.ASCII)
# What Spark's string -> timestamp cast accepts (the forms the lake sees in practice): a date, optionally a
# time with up to 9 fraction digits, optionally a zone (Z, UTC, +hh:mm, +hhmm, +hh) after the seconds.
_ISO = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|UTC|[+-]\d{2}(?::?\d{2})?)?$",
    re.ASCII,
)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$", re.ASCII)
# Timestamps both Python and Spark represent (years 1 to 9999), as epoch seconds [min, max).
_MIN_EPOCH_S, _MAX_EPOCH_S = -62_135_596_800, 253_402_300_800


@dataclass(frozen=True)
class EventRules:
    """The settings the rules read (``data.*``): built once from settings by the ingestion API and, with the
    same values, by the clean stage, so both judge an event alike."""

    rating_min: float
    rating_max: float
    future_tolerance_s: float

    @classmethod
    def from_settings(cls, data) -> EventRules:  # data: freshrec.core.settings.DataSettings
        return cls(data.rating_min, data.rating_max, data.future_ts_tolerance_s)

    def value_range(self, event_type: str) -> tuple[float, float]:
        """The closed range a finite value of this (known) type must lie in: stars for a rating, else a weight."""
        return (self.rating_min, self.rating_max) if event_type == "rating" else (0.0, math.inf)


@dataclass(frozen=True, slots=True)
class CleanEvent:
    """An event that passed every rule, normalised as it is logged."""

    user_id: str
    item_id: str
    event_type: str
    value: float
    ts: float  # epoch seconds, UTC
    event_id: str | None


def _text(value: object) -> str | None:
    """The lake's string reading of a JSON field (None for null): Spark reads any JSON value into a string
    column as its text, so a number, a boolean or even a nested array is text here too, and the rules judge it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # what no JSON body carries (an integer past 64 bits from a Python caller): judged as text
        return json.dumps(value, separators=(",", ":"), default=str)


def parse_number(text: str | None) -> float | None:
    if text is None:
        return None
    text = text.strip()
    if text.lower() in ("nan", "+nan", "-nan"):
        return math.nan
    if text.lower() in ("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"):
        return -math.inf if text.startswith("-") else math.inf
    if not _NUMBER.match(text):
        return None
    return float(text)


def parse_ts(text: str | None) -> float | None:
    """Epoch seconds of an ISO-8601 string (UTC unless it has a zone) or of epoch seconds; None if neither."""
    if text is None:
        return None
    text = text.strip()
    if _EPOCH.match(text):
        epoch = float(text)
        return epoch if _MIN_EPOCH_S <= epoch < _MAX_EPOCH_S else None
    m = _ISO.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    if zone and second is None:  # Spark reads a zone only after the seconds
        return None
    try:
        when = dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                           int((fraction or "0")[:6].ljust(6, "0")), tzinfo=dt.UTC)
    except ValueError:
        return None
    offset = 0
    if zone and zone not in ("Z", "UTC"):
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if minutes > 59 or hours * 60 + minutes > 18 * 60:  # zone offsets span -18:00..+18:00
            return None
        offset = (hours * 3600 + minutes * 60) * (1 if zone[0] == "+" else -1)
    seconds = when.timestamp() - offset
    return seconds if _MIN_EPOCH_S <= seconds < _MAX_EPOCH_S else None


def check_event(event: object, rules: EventRules, now_s: float) -> tuple[CleanEvent | None, str | None]:
    """(the normalised event, None) when every rule holds, else (None, the first failing rule's reason).

    ``now_s`` is the receiving clock: it stands for both the wall clock and the landing day's end in the
    clean stage's horizon (an event posted now lands today), and it is the default ``ts``.
    """
    if not isinstance(event, Mapping):
        return None, MALFORMED
    user_id, item_id, event_type, value, ts, event_id = (_text(event.get(name)) for name in EVENT_FIELDS)
    user_id, item_id = (user_id or "").strip(), (item_id or "").strip()
    if not user_id or not item_id:
        return None, EMPTY_ID
    if event_id is not None:
        event_id = event_id.strip()
        if not event_id or len(event_id) > MAX_EVENT_ID_LENGTH:
            return None, INVALID_EVENT_ID
    kind = (event_type or "").strip().lower()
    if kind not in EVENT_TYPES:
        return None, UNKNOWN_EVENT_TYPE
    number = parse_number(value)
    if number is None or not math.isfinite(number):
        return None, NON_NUMERIC_VALUE
    low, high = rules.value_range(kind)
    if not low <= number <= high:
        return None, RATING_OUT_OF_RANGE if kind == "rating" else NEGATIVE_WEIGHT
    when = now_s if ts is None else parse_ts(ts)
    if when is None or not math.isfinite(when):
        return None, UNPARSEABLE_TS
    if when > now_s + rules.future_tolerance_s:
        return None, FUTURE_TS
    return CleanEvent(user_id, item_id, kind, number, when, event_id), None


def iso_utc(epoch_s: float) -> str:
    """Epoch seconds -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (what the log and the lake store)."""
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- the log watermark of an online snapshot ----------------------------------------------------------------

WATERMARK_FILE: Final = "watermark.json"


@dataclass(frozen=True)
class Watermark:
    """What of the ingestion log an online snapshot already holds.

    ``writers`` maps each log writer (one per serving process) to the highest sequence number the snapshot
    covers; a writer's events land in the lake in sequence order, so everything at or below it is in.
    Events at or after ``until_ts`` (the end of the snapshot's day) are never counted as covered: the
    snapshot holds events up to its day only, so such an event stays in the live tail until a later one does.
    """

    as_of: str | None = None
    until_ts: float = -math.inf
    writers: dict[str, int] = field(default_factory=dict)

    def covers(self, writer: str, seq: int, ts: float) -> bool:
        return ts < self.until_ts and seq <= self.writers.get(writer, -1)

    def to_json(self) -> str:
        return json.dumps({"as_of": self.as_of, "until_ts": self.until_ts, "writers": dict(sorted(self.writers.items()))})

    @classmethod
    def read(cls, snapshot_dir: Path) -> Watermark:
        """The snapshot's watermark; a snapshot without one (older code) covers no log position."""
        path = snapshot_dir / WATERMARK_FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(data.get("as_of"), float(data["until_ts"]), {str(k): int(v) for k, v in data.get("writers", {}).items()})
