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


def category_affinity(events: DataFrame, items_meta: DataFrame) -> DataFrame:
    """user_id, category_affinity (category -> share of the category mentions over the user's events; items with
    several categories count for each), top_category (ties broken by name)."""
    categories = items_meta.select("item_id", F.explode("categories").alias("category"))
    counts = events.join(F.broadcast(categories), "item_id").groupBy("user_id", "category").agg(F.count(F.lit(1)).alias("n"))
    per_user = counts.groupBy("user_id").agg(
        F.sum("n").alias("_total"),
        F.map_from_entries(F.array_sort(F.collect_list(F.struct("category", "n")))).alias("_counts"),
        F.max_by("category", F.struct("n", F.col("category"))).alias("top_category"),
    )
    shares = F.transform_values("_counts", lambda _, n: n / F.col("_total"))
    return per_user.select("user_id", shares.alias("category_affinity"), "top_category")


def snapshot_users(events: DataFrame, user_features: DataFrame, as_of: dt.date, history_length: int,
                   items_meta: DataFrame | None = None) -> DataFrame:
    features = user_features.where(F.col("ds") == as_of.isoformat()).drop("ds", "last_items")
    users = user_sequences(events, history_length).join(features, "user_id", "left")
    if items_meta is not None:
        users = users.join(category_affinity(events, items_meta), "user_id", "left")
    return users


def snapshot_items(item_features: DataFrame, as_of: dt.date) -> DataFrame:
    """Items as of ``as_of``; popularity is the 30-day event count (recent, for cold start), ties by all-time."""
    features = item_features.where(F.col("ds") == as_of.isoformat()).drop("ds")
    popularity = F.col("pop_30d").cast("double") + F.col("pop_all").cast("double") / F.lit(1e9)
    return features.withColumn("popularity", popularity)

