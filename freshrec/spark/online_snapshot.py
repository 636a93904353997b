"""The online snapshot serving loads: per-user history/seen plus features, per-item popularity plus features.

The per-user parts that span all time (every item touched, category mentions) are built from two carried
frames, so a daily run can update the previous day's instead of reading every event again: ``touches``
(user_id, touch: every item with its last interaction, sorted by (last_ts, item_id)) and ``category_counts``
(user_id, categories: category -> mentions, keys sorted).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def touches(events: DataFrame) -> DataFrame:
    last_touch = events.groupBy("user_id", "item_id").agg(F.max("ts").alias("last_ts"))
    return last_touch.groupBy("user_id").agg(F.sort_array(F.collect_list(F.struct("last_ts", "item_id"))).alias("touch"))


def category_counts(events: DataFrame, items_meta: DataFrame) -> DataFrame:
    """Items with several categories count for each."""
    categories = items_meta.select("item_id", F.explode("categories").alias("category"))
    counts = events.join(F.broadcast(categories), "item_id").groupBy("user_id", "category").agg(F.count(F.lit(1)).alias("n"))
    return counts.groupBy("user_id").agg(F.map_from_entries(F.array_sort(F.collect_list(F.struct("category", "n")))).alias("categories"))


def _merge(carried: DataFrame, fresh: DataFrame, column: str, combine) -> DataFrame:
    """Per user: the carried value, the fresh one, or ``combine(carried, fresh)`` when there are both."""
    joined = carried.withColumnRenamed(column, "_old").join(fresh.withColumnRenamed(column, "_new"), "user_id", "full")
    old, new = F.col("_old"), F.col("_new")
    return joined.select("user_id", F.when(new.isNull(), old).when(old.isNull(), new).otherwise(combine(old, new)).alias(column))


def _touch_map(touch: Column) -> Column:
    return F.map_from_entries(F.transform(touch, lambda x: F.struct(x["item_id"], x["last_ts"])))


def merge_touches(carried: DataFrame, fresh: DataFrame) -> DataFrame:
    """An item's last interaction is the later of the carried one and the fresh one (late events can be older)."""
    def combine(old: Column, new: Column) -> Column:
        merged = F.map_zip_with(_touch_map(old), _touch_map(new), lambda _, a, b: F.greatest(a, b))
        return F.sort_array(F.transform(F.map_entries(merged), lambda e: F.struct(e["value"].alias("last_ts"), e["key"].alias("item_id"))))
    return _merge(carried, fresh, "touch", combine)


def merge_category_counts(carried: DataFrame, fresh: DataFrame) -> DataFrame:
    def combine(old: Column, new: Column) -> Column:
        summed = F.map_zip_with(old, new, lambda _, a, b: F.coalesce(a, F.lit(0)) + F.coalesce(b, F.lit(0)))
        return F.map_from_entries(F.array_sort(F.map_entries(summed)))
    return _merge(carried, fresh, "categories", combine)


def user_sequences(touch: DataFrame, history_length: int) -> DataFrame:
    """user_id, history (distinct items, oldest first by last interaction, the last N), seen (all, sorted)."""
    items = F.col("touch.item_id")
    history = F.slice(items, F.greatest(F.size(items) - history_length + 1, F.lit(1)), history_length)
    return touch.select("user_id", history.alias("history"), F.array_sort(items).alias("seen"))


def category_affinity(counts: DataFrame) -> DataFrame:
    """user_id, category_affinity (category -> share of the category mentions over the user's events),
    top_category (ties broken by name)."""
    m = F.col("categories")
    total = F.aggregate(F.map_values(m), F.lit(0).cast("long"), lambda acc, n: acc + n)
    shares = F.transform_values(m, lambda _, n: n / total)
    top = F.array_max(F.transform(F.map_entries(m), lambda e: F.struct(e["value"].alias("n"), e["key"].alias("category"))))
    return counts.select("user_id", shares.alias("category_affinity"), top["category"].alias("top_category"))


def snapshot_users(touch: DataFrame, counts: DataFrame | None, user_features: DataFrame, as_of: dt.date,
                   history_length: int) -> DataFrame:
    features = user_features.where(F.col("ds") == as_of.isoformat()).drop("ds", "last_items")
    users = user_sequences(touch, history_length).join(features, "user_id", "left")
    if counts is not None:
        users = users.join(category_affinity(counts), "user_id", "left")
    return users


def snapshot_items(item_features: DataFrame, as_of: dt.date) -> DataFrame:
    """Items as of ``as_of``; popularity is the 30-day event count (recent, for cold start), ties by all-time."""
    features = item_features.where(F.col("ds") == as_of.isoformat()).drop("ds")
    popularity = F.col("pop_30d").cast("double") + F.col("pop_all").cast("double") / F.lit(1e9)
    return features.withColumn("popularity", popularity)
