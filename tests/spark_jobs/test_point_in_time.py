"""Point-in-time correctness on a constructed case, idempotent reruns and atomic publication."""

from __future__ import annotations

import datetime as dt
import json
import os

import pandas as pd
import pyarrow.dataset as pads
import pytest

from freshrec.core.layout import Layout
from freshrec.spark import publish as publish_module
from tests.spark_jobs import rawdata
from tests.spark_jobs.conftest import run_and_publish, stage_only

pytestmark = pytest.mark.slow
D1, D2, D3 = dt.date(2026, 2, 1), dt.date(2026, 2, 2), dt.date(2026, 2, 10)


def _table(layout: Layout, day: dt.date, table: str):
    return pads.dataset(str(layout.features_partition(day) / table), format="parquet").to_table().to_pandas()


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


def test_point_in_time_features_and_examples(spark, settings):
    home = settings.home
    _constructed(home)
    run_and_publish(spark, settings, D1, D3)
    layout = Layout(home)

    u1 = _table(layout, D1, "users").set_index("user_id")
    assert u1.loc["alice", "n_events"] == 2 and u1.loc["alice", "mean_rating"] == 4.0
    assert list(u1.loc["alice", "last_items"]) == ["a", "b"]
    u2 = _table(layout, D2, "users").set_index("user_id")
    assert list(u2.loc["alice", "last_items"]) == ["a", "b", "a", "c"]  # time order, epoch ts first
    assert u2.loc["alice", "mean_rating"] == 3.0 and u2.loc["alice", "n_purchase_1d"] == 1
    assert u2.loc["bob", "n_click_1d"] == 0 and u2.loc["bob", "n_click_7d"] == 1
    u3 = _table(layout, D3, "users").set_index("user_id")
    assert u3.loc["alice", "n_rating_7d"] == 0 and u3.loc["alice", "n_view_7d"] == 0  # D1, D2 left the 7-day window
    assert u3.loc["alice", "n_rating_30d"] == 2 and u3.loc["alice", "n_rating_all"] == 2
    assert u3.loc["alice", "recency_days"] == pytest.approx(9 - 7 / 24)  # end of D3 minus alice's last event
    items3 = _table(layout, D3, "items").set_index("item_id")
    assert items3.loc["a", "pop_all"] == 3 and items3.loc["a", "pop_7d"] == 0 and items3.loc["a", "age_days"] == 9
    assert items3.loc["c", "pop_1d"] == 1 and items3.loc["c", "mean_rating"] == 2.0

    # Training examples of D2 carry the features as of the end of D1: nothing of D2 leaks in.
    ex2 = _table(layout, D2, "training_examples")
    pos = ex2[(ex2["label"] == 1) & (ex2["user_id"] == "alice")].set_index("item_id")
    assert set(pos.index) == {"a", "c"}
    assert (pos["u_n_events"] == 2).all() and (pos["u_mean_rating"] == 4.0).all()
    assert pos.loc["a", "i_pop_all"] == 2 and pos.loc["a", "i_age_days"] == 0
    assert pd.isna(pos.loc["c", "i_pop_all"])  # item c did not exist before D2
    negatives = ex2[ex2["label"] == 0]
    assert len(negatives) > 0 and set(negatives["item_id"]) <= {"a", "b"}  # drawn from items known by the end of D1


def test_rerun_is_idempotent_and_publish_is_atomic(spark, settings, monkeypatch):
    home = settings.home
    _constructed(home)
    run_and_publish(spark, settings, D1, D2)
    layout = Layout(home)
    manifest_before = json.loads(layout.manifest(D2).read_text())
    rows_before = _table(layout, D2, "training_examples").sort_values(["user_id", "item_id", "label", "ts"]).reset_index(drop=True)

    run_and_publish(spark, settings, D2, D2)
    manifest_after = json.loads(layout.manifest(D2).read_text())
    assert manifest_after == manifest_before  # the same manifest, byte for byte in content
    rows_after = _table(layout, D2, "training_examples").sort_values(["user_id", "item_id", "label", "ts"]).reset_index(drop=True)
    assert rows_after.equals(rows_before)
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
    assert _table(layout, D2, "training_examples").sort_values(["user_id", "item_id", "label", "ts"]).reset_index(drop=True).equals(rows_before)
    assert layout.feature_days() == [D1, D2]
    assert pads.dataset(str(layout.clean_events), format="parquet", partitioning="hive").to_table().num_rows == 5
