"""The online snapshot serving loads: per-user history/seen plus features, per-item popularity plus features."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def user_sequences(events: DataFrame, history_length: int) -> DataFrame:
    """user_id, history (distinct items, oldest first by last interaction, the last N), seen (all, sorted)."""
    last_touch = events.groupBy("user_id", "item_id").agg(F.max("ts").alias("last_ts"))
    per_user = last_touch.groupBy("user_id").agg(F.sort_array(F.collect_list(F.struct("last_ts", "item_id"))).alias("_touch"))
    items = F.col("_touch.item_id")
    history = F.slice(items, F.greatest(F.size(items) - history_length + 1, F.lit(1)), history_length)
    return per_user.select("user_id", history.alias("history"), F.array_sort(items).alias("seen"))


def snapshot_users(events: DataFrame, user_features: DataFrame, as_of: dt.date, history_length: int) -> DataFrame:
    features = user_features.where(F.col("ds") == as_of.isoformat()).drop("ds", "last_items")
    return user_sequences(events, history_length).join(features, "user_id", "left")


def snapshot_items(item_features: DataFrame, as_of: dt.date) -> DataFrame:
    """Items as of ``as_of``; popularity is the 30-day event count (recent, for cold start), ties by all-time."""
    features = item_features.where(F.col("ds") == as_of.isoformat()).drop("ds")
    popularity = F.col("pop_30d").cast("double") + F.col("pop_all").cast("double") / F.lit(1e9)
    return features.withColumn("popularity", popularity)

