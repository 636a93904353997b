"""The landing job: two writers' segments with repeated event_ids, a rerun that lands nothing, a crashed writer's
late segment routed past the published days, and a crash before the checkpoint commit replayed exactly once.

Each landing runs as the pipeline runs it: ``python -m freshrec.spark.landing_stream`` in a process of its own, under
the Spark job time limit (a long-lived test worker's py4j callback server is not what production uses)."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter

import pyarrow.parquet as pq
import pytest

from freshrec.core.layout import Layout
from freshrec.core.settings import Settings
from freshrec.pipeline.features.runs import LandingFailed, run_spark_module
from freshrec.spark.landing_stream import DATA_COLUMNS, batch_manifest_path, data_file_name, lock_checkpoint
from tests.spark_jobs import rawdata

pytestmark = pytest.mark.slow
D1, D2, D3, D4 = (dt.date(2026, 12, 3) + dt.timedelta(days=i) for i in range(4))


def _at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def _raw_files(layout: Layout) -> dict[str, float]:
    return {str(p.relative_to(layout.raw_events)): p.stat().st_mtime for p in layout.raw_events.glob("ds=*/*.parquet")}


def run_landing(settings: Settings) -> dict:
    """One availableNow landing run (Spark is started even when no segment waits: the checkpoint decides)."""
    bounded = settings.model_copy(update={"spark_job_timeout_s": 600.0})
    return run_spark_module(bounded, "freshrec.spark.landing_stream", ["--home", str(settings.home)], LandingFailed)


def _publish_features(layout: Layout, day: dt.date) -> None:
    """What routing looks at: a published features partition (its manifest)."""
    layout.manifest(day).parent.mkdir(parents=True, exist_ok=True)
    layout.manifest(day).write_text("{}")


def test_exactly_once_dedup_routing_and_replay(settings):
    layout = Layout(settings.home)
    rawdata.write_segment(layout.landing, "w1", 1, [f"a{i}" for i in range(1, 7)], 1, _at(D1, 10))
    rawdata.write_segment(layout.landing, "w1", 2, [f"a{i}" for i in range(7, 11)], 7, _at(D2, 8))
    rawdata.write_segment(layout.landing, "w2", 1, ["b1", "a8", "b3", "b1", "b5"], 1, _at(D2, 9))  # a retry, another writer's id

    first = run_landing(settings)
    assert first["events"] == {D1.isoformat(): 6, D2.isoformat(): 7} and first["dropped_late"] == 0
    manifest = json.loads(batch_manifest_path(layout, first["batches"][0]).read_text())
    seqs = {day: {w: p["max_seq"] for w, p in entry["writers"].items()} for day, entry in manifest["days"].items()}
    assert seqs == {D1.isoformat(): {"w1": 6}, D2.isoformat(): {"w1": 10, "w2": 5}}
    assert manifest["routes"] == {D1.isoformat(): D1.isoformat(), D2.isoformat(): D2.isoformat()}
    assert not list(layout.landing.glob("*.jsonl")) and len(list(layout.landing_archive.rglob("*.jsonl"))) == 3
    landed = _raw_files(layout)
    table = pq.read_table(layout.raw_events / manifest["days"][D1.isoformat()]["file"])
    assert tuple(table.column_names) == DATA_COLUMNS and str(table.schema.field("value").type) == "double"

    assert run_landing(settings)["batches"] == []  # nothing new: nothing landed, nothing rewritten
    assert _raw_files(layout) == landed

    # A writer died on D2 with an open segment (a torn last line, one id it repeats); D1 and D2 are processed since.
    _publish_features(layout, D1)
    _publish_features(layout, D2)
    rawdata.write_segment(layout.landing_open, "w3", 1, ["c1", "c2", "a2", "c4"], 1, _at(D2, 7), torn='{"event_id": "c5", "us')
    late = run_landing(settings)
    assert late["sealed_orphans"] == 1 and late["events"] == {D3.isoformat(): 3}
    (batch,) = late["batches"]
    manifest = json.loads(batch_manifest_path(layout, batch).read_text())
    assert manifest["routes"] == {D2.isoformat(): D3.isoformat()}
    assert manifest["days"][D3.isoformat()]["writers"] == {"w3": {"min_seq": 1, "max_seq": 4, "events": 3}}

    # A crash after the files were written but before Spark committed the batch: the replay lands it again where
    # its manifest says, although D3 is published by now (fresh routing would pick D4).
    (layout.raw_events / manifest["days"][D3.isoformat()]["file"]).unlink()
    for name in (str(batch), f".{batch}.crc"):
        (layout.stream_checkpoint / "commits" / name).unlink(missing_ok=True)
    _publish_features(layout, D3)
    replay = run_landing(settings)
    assert replay["batches"] == [batch] and replay["events"] == {D3.isoformat(): 3}
    assert json.loads(batch_manifest_path(layout, batch).read_text()) == manifest
    assert not layout.raw_partition(D4).exists()

    ids = Counter(eid for path in layout.raw_events.glob("ds=*/*.parquet")
                  for eid in pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist())
    expected = {f"a{i}" for i in range(1, 11)} | {"b1", "b3", "b5", "c1", "c2", "c4"}
    assert set(ids) == expected and set(ids.values()) == {1}
    assert sorted(_raw_files(layout)) == sorted([f"ds={D1}/{data_file_name(0)}", f"ds={D2}/{data_file_name(0)}",
                                                 f"ds={D3}/{data_file_name(batch)}"])


def test_a_second_landing_job_stands_aside(settings):
    layout = Layout(settings.home)
    rawdata.write_segment(layout.landing, "w1", 1, ["x1"], 1, _at(D1, 10))
    fd = lock_checkpoint(layout)  # as a continuous landing job holds it
    try:
        summary = run_landing(settings)
    finally:
        os.close(fd)
    assert summary["batches"] == [] and "another landing job" in summary["skipped"]
    assert list(layout.landing.glob("*.jsonl"))  # untouched
