"""The online snapshot's log watermark, and a publish that never turns serving back in time; along the way the
clean stage's event_id dedup (in the batch, across users, and against published history with another ts)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from freshrec.core.events import WATERMARK_FILE, Watermark
from freshrec.core.layout import Layout
from freshrec.spark.landing_stream import batch_manifest_path, data_file_name, log_watermark, write_json_atomic
from freshrec.spark.publish import goes_live
from tests.spark_jobs import rawdata
from tests.spark_jobs.conftest import run_and_publish

D1, D2, D3 = (dt.date(2026, 11, 2) + dt.timedelta(days=i) for i in range(3))
SCHEMA = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("event_type", pa.string()),
                    ("value", pa.float64()), ("ts", pa.string()), ("event_id", pa.string())])


def _end_of(day: dt.date) -> float:
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).timestamp()


def _entry(file: str, **writers: tuple[int, int, int]) -> dict:
    return {"file": file, "writers": {w: {"min_seq": a, "max_seq": b, "events": n} for w, (a, b, n) in writers.items()}}


def test_watermark_stops_below_a_range_the_snapshot_did_not_read():
    manifests = [
        {"batch_id": 0, "days": {"2026-11-02": _entry("ds=2026-11-02/a", w1=(1, 10, 10), w2=(1, 4, 4))}},
        # w1's 11..14 were routed past the published days into a file this snapshot did not read
        {"batch_id": 1, "days": {"2026-11-04": _entry("ds=2026-11-04/b", w1=(11, 14, 4)),
                                 "2026-11-03": _entry("ds=2026-11-03/b", w1=(15, 20, 6), w2=(5, 9, 5))}},
        {"batch_id": 2, "days": {"2026-11-04": _entry("ds=2026-11-04/c", w3=(1, 3, 3))}},
    ]
    read = {"ds=2026-11-02/a", "ds=2026-11-03/b"}
    watermark = log_watermark(manifests, read, D2)
    assert watermark == Watermark(as_of=D2.isoformat(), until_ts=_end_of(D2), writers={"w1": 10, "w2": 9})
    assert watermark.covers("w1", 10, _end_of(D2) - 1) and not watermark.covers("w1", 15, _end_of(D2) - 1)
    assert not watermark.covers("w3", 1, 0.0)


def test_goes_live_only_forward(tmp_path: Path):
    online = tmp_path / "online"
    assert goes_live(online, "2026-11-02")[0]  # nothing live yet
    (online / "snap-b").mkdir(parents=True)
    (online / "CURRENT").write_text("snap-b\n")
    assert goes_live(online, "2026-11-01")[0]  # the live one predates watermarks: it counts as older
    (online / "snap-b" / WATERMARK_FILE).write_text(Watermark(as_of="2026-11-03", until_ts=0.0).to_json())
    live, reason = goes_live(online, "2026-11-02")
    assert not live and "older than the live snapshot snap-b" in reason
    assert goes_live(online, "2026-11-03")[0] and goes_live(online, "2026-11-04")[0]


def _stream_file(layout: Layout, day: dt.date, batch: int, rows: list[dict]) -> str:
    path = layout.raw_partition(day) / data_file_name(batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return f"ds={day}/{data_file_name(batch)}"


def _row(user: str, item: str, hour: int, day: dt.date, event_id: str | None, kind: str = "click") -> dict:
    return {"user_id": user, "item_id": item, "event_type": kind, "value": 1.0, "ts": f"{day}T{hour:02d}:00:00.000000Z",
            "event_id": event_id}


@pytest.mark.slow
def test_snapshot_watermark_and_backfill_keeps_serving_current(spark, settings):
    layout = Layout(settings.home)
    # The landing job's output, by hand: D1 and D2 landed; a batch routed to D3 is not read by any run here.
    d1 = [_row(f"u{s % 3}", f"i{s}", s, D1, f"w1-{s}") for s in range(1, 6)] + [_row("u5", "i5", 12, D1, f"w2-{s}") for s in (1, 2, 3)]
    d1[-1]["item_id"], d1[-2]["item_id"] = "i7", "i8"
    d2 = [_row(f"u{s % 3}", f"i{s}", s - 5, D2, f"w1-{s}") for s in range(6, 9)] + [_row("u1", "i2", 9, D2, "w1-2")]  # a reused id
    files = [_stream_file(layout, D1, 0, d1), _stream_file(layout, D2, 1, d2),
             _stream_file(layout, D3, 2, [_row("u9", "i9", 1, D3, "w2-4")])]
    write_json_atomic(batch_manifest_path(layout, 0), {"batch_id": 0, "days": {str(D1): _entry(files[0], w1=(1, 5, 5), w2=(1, 3, 3))}})
    write_json_atomic(batch_manifest_path(layout, 1), {"batch_id": 1, "days": {str(D2): _entry(files[1], w1=(6, 9, 4))}})
    write_json_atomic(batch_manifest_path(layout, 2), {"batch_id": 2, "days": {str(D3): _entry(files[2], w2=(4, 4, 1))}})
    # Files from elsewhere: with event_ids (one shared by two users, one exact copy) and without (exact copies only).
    pq.write_table(pa.Table.from_pylist([_row("u1", "i1", 10, D1, "x1"), _row("u2", "i2", 9, D1, "x1"),
                                         _row("u3", "i3", 11, D1, "x2"), _row("u3", "i3", 11, D1, "x2")], schema=SCHEMA),
                   layout.raw_partition(D1) / "other.parquet")
    plain = rawdata.regular_day(D2, users=3, per_user=2)
    rawdata.write_parquet(settings.home, D2, plain + plain[:1], name="plain.parquet")

    run_and_publish(spark, settings, D1, D1)
    second = run_and_publish(spark, settings, D2, D2)
    assert second["mode"]["incremental"] and second["snapshot_live"]
    live = layout.online / (layout.online / "CURRENT").read_text().strip()
    assert json.loads((live / WATERMARK_FILE).read_text()) == {"as_of": str(D2), "until_ts": _end_of(D2),
                                                             "writers": {"w1": 9, "w2": 3}}
    m1, m2 = (json.loads(layout.manifest(d).read_text()) for d in (D1, D2))
    assert (m1["input_rows"], m1["valid_rows"], m1["duplicate_rows"]) == (12, 10, 2)
    assert (m2["input_rows"], m2["valid_rows"], m2["duplicate_rows"]) == (11, 9, 2)  # w1-2 again, one exact copy
    clean = pads.dataset(str(layout.clean_events), format="parquet", partitioning="hive").to_table().to_pandas()
    ids = clean["event_id"].dropna()
    assert ids.is_unique and len(ids) == 13 and len(clean) == 19
    assert clean.set_index("event_id").loc["x1", "user_id"] == "u2"  # the earlier ts wins a shared id

    backfill = run_and_publish(spark, settings, D1, D1)  # a rerun of the past: published, but serving stays on D2
    assert backfill["snapshot_live"] is False and "older than the live snapshot" in backfill["snapshot_reason"]
    assert (layout.online / "CURRENT").read_text().strip() == live.name
    assert Watermark.read(layout.online / backfill["snapshot"]).as_of == str(D1)
    assert json.loads(layout.manifest(D1).read_text()) == m1
