"""Spark vs the DuckDB oracle on the same clean events: identical feature tables and online snapshot."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from freshrec.core.layout import Layout
from freshrec.tools.data.features_oracle import compute_features
from tests.spark_jobs.conftest import run_and_publish

pytestmark = pytest.mark.slow
START, DAYS = dt.date(2026, 3, 1), 4


def _synth(home):
    from freshrec.tools.data.synth import SynthConfig, synthesize

    config = SynthConfig(out=Layout(home).raw_events, start=START, days=DAYS, users=150, items=80, events_per_day=1200, seed=3)
    for _ in synthesize(config):
        pass


def _published(layout: Layout, table: str, days: list[dt.date]) -> pd.DataFrame:
    frames = []
    for day in days:
        frame = pads.dataset(str(layout.features_partition(day) / table), format="parquet").to_table().to_pandas()
        frame["ds"] = day.isoformat()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _assert_same(spark_df: pd.DataFrame, duck_df: pd.DataFrame, keys: list[str]) -> None:
    assert len(spark_df) == len(duck_df) > 0
    left = spark_df.sort_values(keys).reset_index(drop=True)
    right = duck_df.sort_values(keys).reset_index(drop=True)
    for column in right.columns:
        if column in ("history", "seen"):
            assert [list(x) for x in left[column]] == [list(x) for x in right[column]], column
        elif pd.api.types.is_numeric_dtype(right[column]):
            np.testing.assert_allclose(left[column].astype(float), right[column].astype(float), rtol=1e-9, equal_nan=True, err_msg=column)
        else:
            assert left[column].astype(str).tolist() == right[column].astype(str).tolist(), column


def test_spark_features_match_duckdb(spark, settings):
    _synth(settings.home)
    first, last = START + dt.timedelta(days=1), START + dt.timedelta(days=DAYS - 1)
    run_and_publish(spark, settings, START, START)  # history published first: exercises the incremental base
    run_and_publish(spark, settings, first, last)
    layout = Layout(settings.home)

    clean = pads.dataset(str(layout.clean_events), format="parquet", partitioning="hive").to_table()
    clean = clean.set_column(clean.schema.get_field_index("ds"), "ds", clean.column("ds").cast(pa.string()))
    oracle = compute_features(clean.drop(["landed"]), first, last, settings.data.online_history_length)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]

    spark_users = _published(layout, "users", days)
    assert sorted(spark_users.columns) == sorted(oracle.users.columns)  # like for like: no column only one engine builds
    _assert_same(spark_users[oracle.users.columns], oracle.users, ["ds", "user_id"])
    spark_items = _published(layout, "items", days)
    assert sorted(spark_items.columns) == sorted(oracle.items.columns)
    # what the GX suite and the online snapshot read, nothing else (last_items, trend_30d, category: unread, gone)
    assert sorted(spark_items.columns) == ["age_days", "ds", "item_id", "mean_rating", "pop_30d", "pop_7d", "pop_all", "trend_7d"]
    _assert_same(spark_items[oracle.items.columns], oracle.items, ["ds", "item_id"])

    snapshot = layout.online / (layout.online / "CURRENT").read_text().strip()
    online_users = pq.read_table(snapshot / "users.parquet").to_pandas()
    assert list(online_users.columns) == ["user_id", "history", "seen"]  # what serving reads, nothing else
    _assert_same(online_users, oracle.sequences, ["user_id"])
    online_items = pq.read_table(snapshot / "items.parquet").to_pandas()
    assert list(online_items.columns) == ["item_id", "popularity"]
    as_of = oracle.items[oracle.items["ds"] == last.isoformat()]
    expected = as_of.assign(popularity=as_of["pop_30d"] + as_of["pop_all"] / 1e9)[["item_id", "popularity"]]
    _assert_same(online_items, expected, ["item_id"])
