"""Tiny hand-made raw partitions for the data-plane tests (CSV, JSONL and Parquet writers)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from freshrec.core.layout import Layout

HEADER = "user_id,item_id,event_type,value,ts"


def partition(home: Path, day: dt.date) -> Path:
    folder = Layout(home).raw_partition(day)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_csv(home: Path, day: dt.date, lines: list[str], name: str = "events.csv") -> Path:
    path = partition(home, day) / name
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def write_jsonl(home: Path, day: dt.date, lines: list[str], name: str = "events.jsonl") -> Path:
    path = partition(home, day) / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_parquet(home: Path, day: dt.date, rows: list[dict], name: str = "events.parquet") -> Path:
    path = partition(home, day) / name
    table = pa.Table.from_pylist(rows, schema=pa.schema([("user_id", pa.string()), ("item_id", pa.string()),
                                                          ("event_type", pa.string()), ("value", pa.float64()), ("ts", pa.string())]))
    pq.write_table(table, path)
    return path


def event(user: str, item: str, kind: str, value: float, ts: str) -> dict:
    return {"user_id": user, "item_id": item, "event_type": kind, "value": value, "ts": ts}


def json_line(user: str, item: str, kind: str, value: object, ts: object) -> str:
    return json.dumps({"user_id": user, "item_id": item, "event_type": kind, "value": value, "ts": ts})


def regular_day(day: dt.date, users: int = 6, items: int = 5, per_user: int = 4) -> list[dict]:
    """A clean, deterministic day: every user touches a few items with a mix of event types."""
    kinds = ["view", "click", "rating", "purchase"]
    rows = []
    for u in range(users):
        for k in range(per_user):
            kind = kinds[(u + k) % 4]
            value = float(1 + (u + k) % 5) if kind == "rating" else 1.0
            ts = dt.datetime.combine(day, dt.time(hour=(1 + u) % 24, minute=(5 * k + u // 23) % 60), tzinfo=dt.UTC)
            rows.append(event(f"u{u}", f"i{(u * 3 + k) % items}", kind, value, ts.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return rows


# One bad CSV line per quarantine class (plus the reason the clean job must give it).
BAD_CSV_LINES = {
    "empty_user": (",i1,view,1.0,2026-01-02T10:00:00Z", "empty_id"),
    "empty_item": ("u1,,view,1.0,2026-01-02T10:00:00Z", "empty_id"),
    "unknown_type": ("u1,i1,like,1.0,2026-01-02T10:00:00Z", "unknown_event_type"),
    "non_numeric": ("u1,i1,view,abc,2026-01-02T10:00:00Z", "non_numeric_value"),
    "rating_range": ("u1,i1,rating,7.5,2026-01-02T10:00:00Z", "rating_out_of_range"),
    "negative": ("u1,i1,purchase,-3,2026-01-02T10:00:00Z", "negative_weight"),
    "bad_ts": ("u1,i1,click,1.0,yesterday-ish", "unparseable_ts"),
    "future_ts": ("u1,i1,click,1.0,2027-06-01T00:00:00Z", "future_ts"),
    "too_few": ("u1,i1,click", "malformed_line"),
    "too_many": ("u1,i1,click,1.0,2026-01-02T10:00:00Z,extra", "malformed_line"),
}


def log_line(event_id: str, writer: str, seq: int, ingested: dt.datetime, user: str, item: str) -> str:
    """One line of the ingestion log, as freshrec.core.eventlog writes it (ts 30 s before ingestion)."""
    stamp = ingested + dt.timedelta(seconds=seq)
    return json.dumps({"event_id": event_id, "user_id": user, "item_id": item, "event_type": "click", "value": 1.0,
                       "ts": (stamp - dt.timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                       "ingested_at": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "writer": writer, "seq": seq})


def write_segment(folder: Path, writer: str, number: int, ids: list[str], first_seq: int, ingested: dt.datetime,
                  torn: str = "") -> Path:
    """A log segment of ``writer`` holding ``ids`` from seq ``first_seq`` on (``torn``: a partial last line)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{writer}-{number:06d}.jsonl"
    lines = [log_line(eid, writer, first_seq + i, ingested, f"u{(first_seq + i) % 3}", f"i{first_seq + i}")
             for i, eid in enumerate(ids)]
    path.write_text("\n".join(lines) + "\n" + torn, encoding="utf-8")
    return path
