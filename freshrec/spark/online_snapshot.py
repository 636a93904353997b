"""The online snapshot serving loads: per-user history and seen items, per-item popularity; nothing else (serving
reads these columns only, freshrec.serving.snapshot).

The per-user lists span all time (every item touched), so they are built from a carried frame a daily run can
update instead of reading every event again: ``touches`` (user_id, touch: every item with its last interaction,
sorted by (last_ts, item_id)).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def touches(events: DataFrame, by: tuple[str, ...] = (), strength: str | None = None) -> DataFrame:
    """Per user (and per ``by`` key): ``touch``, every item the user interacted with and its last interaction,
    sorted by (last_ts, item_id): a history in last-interaction order, ties by item id. With ``strength``, each
    entry also carries that column's sum over the user's events on the item. The online snapshot and the training
    input (freshrec.spark.training_input) are both built by this function: one order for training and serving."""
    keys = [*by, "user_id"]
    totals = [F.sum(strength).alias("strength")] if strength else []
    last_touch = events.groupBy(*keys, "item_id").agg(F.max("ts").alias("last_ts"), *totals)
    entry = F.struct("last_ts", "item_id", *(["strength"] if strength else []))
    return last_touch.groupBy(*keys).agg(F.sort_array(F.collect_list(entry)).alias("touch"))


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


def user_sequences(touch: DataFrame, history_length: int) -> DataFrame:
    """user_id, history (distinct items, oldest first by last interaction, the last N), seen (all, sorted)."""
    items = F.col("touch.item_id")
    history = F.slice(items, F.greatest(F.size(items) - history_length + 1, F.lit(1)), history_length)
    return touch.select("user_id", history.alias("history"), F.array_sort(items).alias("seen"))


def snapshot_items(item_features: DataFrame, as_of: dt.date) -> DataFrame:
    """item_id, popularity as of ``as_of``: the 30-day event count (recent, for cold start), ties by all-time."""
    popularity = F.col("pop_30d").cast("double") + F.col("pop_all").cast("double") / F.lit(1e9)
    return item_features.where(F.col("ds") == as_of.isoformat()).select("item_id", popularity.alias("popularity"))
