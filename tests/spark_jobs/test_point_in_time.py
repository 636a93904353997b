"""Point-in-time correctness of the feature tables and the online snapshot on a constructed case, idempotent reruns
and atomic publication."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from freshrec.core.layout import Layout
from freshrec.spark import publish as publish_module
from tests.spark_jobs import rawdata
from tests.spark_jobs.conftest import run_and_publish, stage_only

pytestmark = pytest.mark.slow
D1, D2, D3 = dt.date(2026, 2, 1), dt.date(2026, 2, 2), dt.date(2026, 2, 10)


def _table(layout: Layout, day: dt.date, table: str):
    return pads.dataset(str(layout.features_partition(day) / table), format="parquet").to_table().to_pandas()


def _rows(folder) -> list[str]:
    """A table's rows, order-free and comparable with == (list columns included)."""
    return sorted(repr(row) for row in pads.dataset(str(folder), format="parquet").to_table().to_pylist())


def _tables(layout: Layout, day: dt.date) -> dict[str, list[str]]:
    return {table: _rows(layout.features_partition(day) / table) for table in ("users", "items")}


def _constructed(home) -> None:
    e = rawdata.event
    rawdata.write_parquet(home, D1, [
        e("alice", "a", "view", 1.0, "2026-02-01T08:00:00Z"),
        e("alice", "b", "rating", 4.0, "2026-02-01T09:00:00Z"),
        e("bob", "a", "click", 1.0, "2026-02-01T10:00:00Z"),
    ])
    rawdata.write_csv(home, D2, [
        "alice,c,rating,2.0,2026-02-02T07:00:00Z",
        "alice,a,purchase,9.99,1769990400",  # epoch seconds: 2026-02-02T00:00:00Z
    ])
    rawdata.write_jsonl(home, D3, [rawdata.json_line("bob", "c", "view", 1, "2026-02-10T12:00:00+00:00")])


def test_point_in_time_features_and_snapshot(spark, settings):
    home = settings.home
    _constructed(home)
    run_and_publish(spark, settings, D1, D3)
    layout = Layout(home)

    # Each day's rows see the events up to the end of that day, nothing later (one run covers D1..D3).
    u1 = _table(layout, D1, "users").set_index("user_id")
    assert u1.loc["alice", "n_events"] == 2 and u1.loc["alice", "mean_rating"] == 4.0
    assert u1.loc["alice", "n_purchase_all"] == 0 and u1.loc["alice", "n_rating_all"] == 1  # D2's purchase and rating
    assert u1.loc["alice", "recency_days"] == pytest.approx(15 / 24)  # end of D1 minus alice's last event, 09:00
    assert not {"last_items", "last_event_ts", "n_ratings_all"} & set(u1.columns)  # nothing reads them: not published
    items1 = _table(layout, D1, "items").set_index("item_id")
    assert sorted(items1.index) == ["a", "b"]  # item c first appears on D2
    assert items1.loc["a", "pop_all"] == 2 and items1.loc["a", "age_days"] == 0
    u2 = _table(layout, D2, "users").set_index("user_id")
    assert u2.loc["alice", "mean_rating"] == 3.0 and u2.loc["alice", "n_purchase_1d"] == 1
    assert u2.loc["bob", "n_click_1d"] == 0 and u2.loc["bob", "n_click_7d"] == 1
    assert u2.loc["bob", "n_view_all"] == 0  # bob's D3 view is not visible on D2
    u3 = _table(layout, D3, "users").set_index("user_id")
    assert u3.loc["alice", "n_rating_7d"] == 0 and u3.loc["alice", "n_view_7d"] == 0  # D1, D2 left the 7-day window
    assert u3.loc["alice", "n_rating_30d"] == 2 and u3.loc["alice", "n_rating_all"] == 2
    assert u3.loc["alice", "recency_days"] == pytest.approx(9 - 7 / 24)  # end of D3 minus alice's last event
    items3 = _table(layout, D3, "items").set_index("item_id")
    assert items3.loc["a", "pop_all"] == 3 and items3.loc["a", "pop_7d"] == 0 and items3.loc["a", "age_days"] == 9
    assert items3.loc["c", "pop_7d"] == 1 and items3.loc["c", "mean_rating"] == 2.0

    # A backfill of D2 after D3 is published: its tables are the ones the range run published for D2, and its
    # snapshot (as of D2) holds nothing of D3, though D3's events are in the lake by then.
    staging = stage_only(spark, settings, D2, D2)
    assert {t: _rows(staging / "features" / f"ds={D2}" / t) for t in ("users", "items")} == _tables(layout, D2)
    snap_users = pq.read_table(staging / "online" / "users.parquet").to_pandas().set_index("user_id")
    assert list(snap_users.loc["bob", "history"]) == ["a"] and list(snap_users.loc["bob", "seen"]) == ["a"]  # not D3's c
    assert list(snap_users.loc["alice", "history"]) == ["b", "a", "c"]  # last touch: b 09:00 D1, a 00:00 D2, c 07:00 D2
    snap_items = pq.read_table(staging / "online" / "items.parquet").to_pandas().set_index("item_id")["popularity"]
    assert snap_items.to_dict() == pytest.approx({"a": 3 + 3e-9, "b": 1 + 1e-9, "c": 1 + 1e-9})  # D3's view of c excluded
    assert json.loads((staging / "run.json").read_text())["as_of"] == str(D2)
    shutil.rmtree(staging)


def test_rerun_is_idempotent_and_publish_is_atomic(spark, settings, monkeypatch):
    home = settings.home
    _constructed(home)
    run_and_publish(spark, settings, D1, D2)
    layout = Layout(home)
    manifest_before = json.loads(layout.manifest(D2).read_text())
    rows_before = _tables(layout, D2)
    # What an older version left in the published days: training examples beside the tables (nothing reads them).
    for day in (D1, D2):
        old = layout.features_partition(day) / "training_examples" / "ds=x"
        old.mkdir(parents=True)
        pq.write_table(pa.table({"user_id": ["alice"], "label": [1]}), old / "part-0.parquet")

    run_and_publish(spark, settings, D2, D2)
    # The republished day is replaced whole (no leftover folder); the untouched day keeps its old folder, harmlessly.
    assert sorted(p.name for p in layout.features_partition(D2).iterdir()) == ["_manifest.json", "_run.json", "_state", "items", "users"]
    assert (layout.features_partition(D1) / "training_examples").is_dir()
    assert len(list((layout.features_partition(D2).parent / "_versions" / f"ds={D2}").iterdir())) == 1
    manifest_after = json.loads(layout.manifest(D2).read_text())
    assert manifest_after == manifest_before  # the same manifest, byte for byte in content
    rows_after = _tables(layout, D2)
    assert rows_after == rows_before
    clean = pads.dataset(str(layout.clean_events), format="parquet", partitioning="hive").to_table()
    assert clean.num_rows == 5  # nothing duplicated by the rerun

    # A publish that dies at the swap leaves the previous partition live and complete.
    staging = stage_only(spark, settings, D2, D2)
    live_before = os.readlink(layout.features_partition(D2))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed during publish")

    monkeypatch.setattr(publish_module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        publish_module.publish_run(layout, staging)
    monkeypatch.undo()
    assert os.readlink(layout.features_partition(D2)) == live_before
    assert json.loads((layout.features_partition(D2) / "_run.json").read_text())["run_range"] == [str(D2), str(D2)]
    assert _tables(layout, D2) == rows_before
    assert layout.feature_days() == [D1, D2]
    assert pads.dataset(str(layout.clean_events), format="parquet", partitioning="hive").to_table().num_rows == 5
