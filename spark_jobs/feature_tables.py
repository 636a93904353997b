"""Point-in-time feature tables, as of the end of each output day, for a whole range in one pass.

A (key, day) grid spans the output range plus the longest look-back window; range windows over the
day index give the 1/7/30-day counts, running sums plus a pre-grid base give all-time figures. Nothing
of a day later than the row's day is ever visible to it. The per-(key, day) aggregates are cached (small
next to the events); the caller clears the session's cache when the run is done.
"""

from __future__ import annotations

import datetime as dt

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from freshrec.schemas import EVENT_TYPES

EPOCH = dt.date(1970, 1, 1)
SECONDS_PER_DAY = 86_400


def day_index(day: dt.date) -> int:
    return (day - EPOCH).days


def with_day_index(events: DataFrame) -> DataFrame:
    """Events with ``d`` (the event day as an integer); the clean step already carries it."""
    if "d" in events.columns:
        return events
    return events.withColumn("d", F.datediff(F.to_date(F.col("ds")), F.lit(EPOCH.isoformat())))


def _grid(keys_first_day: DataFrame, key: str, grid_start: int, last: int) -> DataFrame:
    """(key, d) for every day from max(first activity, grid_start) to last."""
    start = F.greatest(F.col("first_d"), F.lit(grid_start))
    return keys_first_day.where(F.col("first_d") <= last).select(
        key, "first_d", F.explode(F.sequence(start, F.lit(last))).alias("d")
    )


def _window_sum(col: str, w: Window, lo: int, hi: int = 0) -> Column:
    return F.coalesce(F.sum(col).over(w.rangeBetween(lo, hi)), F.lit(0)).cast("long")


def _ds_col() -> Column:
    return F.date_add(F.lit(EPOCH.isoformat()).cast("date"), F.col("d").cast("int")).cast("string")


def user_features(events: DataFrame, first: dt.date, last: dt.date, history_length: int) -> DataFrame:
    """One row per (user, ds) for ds in [first, last] and every user active on or before ds."""
    a, b = day_index(first), day_index(last)
    ev = with_day_index(events).where(F.col("d") <= b)
    is_rating = F.col("event_type") == "rating"
    daily = ev.groupBy("user_id", "d").agg(
        *[F.sum(F.when(F.col("event_type") == t, 1).otherwise(0)).alias(f"n_{t}") for t in EVENT_TYPES],
        F.count(F.lit(1)).alias("n_events"),
        F.sum(F.when(is_rating, F.col("value"))).alias("rating_sum"),
        F.sum(F.when(is_rating, 1).otherwise(0)).alias("rating_n"),
        F.max("ts").alias("last_ts"),
        F.sort_array(F.collect_list(F.struct("ts", "item_id"))).alias("day_items"),
    )
    # The last `history_length` items up to each active day: at most that many active days are needed, and
    # at most that many items of each (its tail).
    day_items = F.col("day_items.item_id")
    daily = daily.withColumn("day_items", F.slice(day_items, F.greatest(F.size(day_items) - history_length + 1, F.lit(1)), history_length))
    w_hist = Window.partitionBy("user_id").orderBy("d").rowsBetween(-(history_length - 1), 0)
    daily = daily.withColumn("_hist", F.flatten(F.collect_list(F.col("day_items")).over(w_hist)))  # one window, sliced next
    flat = F.col("_hist")
    daily = daily.withColumn("_hist", F.slice(flat, F.greatest(F.size(flat) - history_length + 1, F.lit(1)), history_length))
    # Three consumers (base, first day, grid): without the cache each would aggregate the events again.
    daily = daily.persist(StorageLevel.MEMORY_AND_DISK)

    grid_start = a - 29
    counts = [f"n_{t}" for t in EVENT_TYPES] + ["n_events"]
    base = daily.where(F.col("d") < grid_start).groupBy("user_id").agg(
        *[F.sum(c).alias(f"base_{c}") for c in counts],
        F.sum("rating_sum").alias("base_rating_sum"),
        F.sum("rating_n").alias("base_rating_n"),
        F.max("last_ts").alias("base_last_ts"),
        F.max_by("_hist", "d").alias("base_hist"),
    )
    first_day = daily.groupBy("user_id").agg(F.min("d").alias("first_d"))
    grid = _grid(first_day, "user_id", grid_start, b)
    g = grid.join(daily.where(F.col("d") >= grid_start), ["user_id", "d"], "left").join(base, "user_id", "left")
    w = Window.partitionBy("user_id").orderBy("d")
    run = w.rowsBetween(Window.unboundedPreceding, 0)
    cols = [F.col("user_id"), F.col("d")]
    for t in EVENT_TYPES + ("events",):
        c = f"n_{t}"
        if t != "events":  # the grid has one row per (user, day): the 1-day window is the row itself
            cols += [F.coalesce(F.col(c), F.lit(0)).cast("long").alias(f"{c}_1d"),
                     _window_sum(c, w, -6).alias(f"{c}_7d"),
                     _window_sum(c, w, -29).alias(f"{c}_30d")]
        cols.append((F.coalesce(F.sum(c).over(run), F.lit(0)) + F.coalesce(F.col(f"base_{c}"), F.lit(0))).cast("long").alias(f"{c}_all"))
    rating_sum = F.coalesce(F.sum("rating_sum").over(run), F.lit(0.0)) + F.coalesce(F.col("base_rating_sum"), F.lit(0.0))
    rating_n = F.coalesce(F.sum("rating_n").over(run), F.lit(0)) + F.coalesce(F.col("base_rating_n"), F.lit(0))
    last_ts = F.coalesce(F.max("last_ts").over(run), F.col("base_last_ts"))
    hist = F.coalesce(F.last("_hist", ignorenulls=True).over(run), F.col("base_hist"))
    cols += [
        F.when(rating_n > 0, rating_sum / rating_n).alias("mean_rating"),
        rating_n.cast("long").alias("n_ratings_all"),
        last_ts.alias("last_event_ts"),
        hist.alias("last_items"),
    ]
    out = g.select(*cols).where(F.col("d") >= a)
    end_of_day = (F.col("d") + 1) * SECONDS_PER_DAY
    out = out.withColumn("recency_days", (end_of_day - F.unix_micros("last_event_ts") / 1_000_000) / SECONDS_PER_DAY)
    return out.withColumn("ds", _ds_col()).drop("d").withColumnRenamed("n_events_all", "n_events")


def item_features(events: DataFrame, first: dt.date, last: dt.date, items_meta: DataFrame | None) -> DataFrame:
    """One row per (item, ds): popularity windows, 7d/30d trend, mean rating, age, category."""
    a, b = day_index(first), day_index(last)
    ev = with_day_index(events).where(F.col("d") <= b)
    is_rating = F.col("event_type") == "rating"
    daily = ev.groupBy("item_id", "d").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.when(is_rating, F.col("value"))).alias("rating_sum"),
        F.sum(F.when(is_rating, 1).otherwise(0)).alias("rating_n"),
    )
    daily = daily.persist(StorageLevel.MEMORY_AND_DISK)  # three consumers, as for users
    grid_start = a - 59
    base = daily.where(F.col("d") < grid_start).groupBy("item_id").agg(
        F.sum("n").alias("base_n"), F.sum("rating_sum").alias("base_rating_sum"), F.sum("rating_n").alias("base_rating_n")
    )
    first_day = daily.groupBy("item_id").agg(F.min("d").alias("first_d"))
    grid = _grid(first_day, "item_id", grid_start, b)
    g = grid.join(daily.where(F.col("d") >= grid_start), ["item_id", "d"], "left").join(base, "item_id", "left")
    w = Window.partitionBy("item_id").orderBy("d")
    run = w.rowsBetween(Window.unboundedPreceding, 0)
    pop_7d, pop_prev_7d = _window_sum("n", w, -6), _window_sum("n", w, -13, -7)
    pop_30d, pop_prev_30d = _window_sum("n", w, -29), _window_sum("n", w, -59, -30)
    rating_sum = F.coalesce(F.sum("rating_sum").over(run), F.lit(0.0)) + F.coalesce(F.col("base_rating_sum"), F.lit(0.0))
    rating_n = F.coalesce(F.sum("rating_n").over(run), F.lit(0)) + F.coalesce(F.col("base_rating_n"), F.lit(0))
    out = g.select(
        "item_id",
        "d",
        F.coalesce(F.col("n"), F.lit(0)).cast("long").alias("pop_1d"),
        pop_7d.alias("pop_7d"),
        pop_30d.alias("pop_30d"),
        (F.coalesce(F.sum("n").over(run), F.lit(0)) + F.coalesce(F.col("base_n"), F.lit(0))).cast("long").alias("pop_all"),
        ((pop_7d + 1) / (pop_prev_7d + 1)).alias("trend_7d"),
        ((pop_30d + 1) / (pop_prev_30d + 1)).alias("trend_30d"),
        F.when(rating_n > 0, rating_sum / rating_n).alias("mean_rating"),
        rating_n.cast("long").alias("n_ratings_all"),
        (F.col("d") - F.col("first_d")).cast("int").alias("age_days"),
    ).where(F.col("d") >= a)
    if items_meta is not None:
        out = out.join(items_meta.select("item_id", "categories"), "item_id", "left")
        out = out.withColumn("category", F.try_element_at(F.col("categories"), F.lit(1)))
    return out.withColumn("ds", _ds_col()).drop("d")
