"""Point-in-time feature tables, as of the end of each output day, for a whole range in one pass.

A (key, day) grid spans the output range plus the longest look-back window; range windows over the
day index give the 1/7/30-day counts, running sums plus a pre-grid base give all-time figures. Nothing
of a day later than the row's day is ever visible to it. The per-(key, day) aggregates are cached (small
next to the events); the caller clears the session's cache when the run is done.

A daily run passes ``Carried``, the previous day's state: its all-time figures are added to the running sums
of the events it has not seen, and its per-day counts fill the windows. Counts add exactly; rating sums are
doubles added in another order than a full run's (equal for the whole and half stars ratings take).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from freshrec.core.schemas import EVENT_TYPES

EPOCH = dt.date(1970, 1, 1)
SECONDS_PER_DAY = 86_400
# Look-back of the windowed features, in days: users 1/7/30-day counts, items 1/7/30-day popularity (trend_7d
# compares the last 7 days with the 7 before). A day's state carries the per-day counts of this many days.
USER_WINDOW_DAYS, ITEM_WINDOW_DAYS = 30, 30
STATE_PREFIX = "_s_"  # internal grid columns: what the state needs, never published


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


def _window_sum(col: str | Column, w: WindowSpec, lo: int, hi: int = 0) -> Column:
    return F.coalesce(F.sum(col).over(w.rangeBetween(lo, hi)), F.lit(0)).cast("long")


def _ds_col() -> Column:
    return F.date_add(F.lit(EPOCH.isoformat()).cast("date"), F.col("d").cast("int")).cast("string")


@dataclass(frozen=True)
class Carried:
    """What the state of the day before the range contributes (events landed up to that day, with event day up
    to it): ``totals`` one row per key (all-time figures), ``days`` one row per key and active day of the trailing
    window (counts), column names as written by ``user_state`` / ``item_state``."""

    totals: DataFrame
    days: DataFrame


def _carried(carried: Carried | None, name: str, sql_type: str) -> Column:
    """A carried column (prefixed ``c_`` by the joins), or a typed null when there is no carried state."""
    return F.col(f"c_{name}") if carried is not None else F.lit(None).cast(sql_type)


def _all_time(col: str, base: str, carried: Carried | None, carried_name: str, run: WindowSpec,
              sql_type: str = "long") -> Column:
    """An all-time figure per grid row: the running sum of ``col`` over the grid, the pre-grid ``base`` and
    the carried state's ``carried_name`` (each may be null)."""
    zero = F.lit(0.0) if sql_type == "double" else F.lit(0)
    return (F.coalesce(F.sum(col).over(run), zero) + F.coalesce(F.col(base), zero)
            + F.coalesce(_carried(carried, carried_name, sql_type), zero))


def _prefixed(df: DataFrame, keys: tuple[str, ...], prefix: str) -> DataFrame:
    return df.select(*keys, *[F.col(c).alias(prefix + c) for c in df.columns if c not in keys])


def _first_days(daily: DataFrame, key: str, carried: Carried | None) -> DataFrame:
    first = daily.groupBy(key).agg(F.min("d").alias("first_d"))
    if carried is None:
        return first
    return first.unionByName(carried.totals.select(key, "first_d")).groupBy(key).agg(F.min("first_d").alias("first_d"))


def _with_carried(g: DataFrame, key: str, grid_start: int, carried: Carried | None) -> DataFrame:
    if carried is None:
        return g
    days = _prefixed(carried.days.where(F.col("d") >= grid_start), (key, "d"), "c_")
    return g.join(days, [key, "d"], "left").join(_prefixed(carried.totals.drop("first_d"), (key,), "c_"), key, "left")


def published(grid: DataFrame, first: dt.date) -> DataFrame:
    """The published table: rows of the output days, without the internal ``_s_`` columns."""
    return grid.where(F.col("_s_d") >= day_index(first)).select(*[c for c in grid.columns if not c.startswith(STATE_PREFIX)])


def user_features(events: DataFrame, first: dt.date, last: dt.date, carried: Carried | None = None) -> DataFrame:
    """One row per (user, day) for every day of the grid (``published`` keeps [first, last]) and every user active
    on or before it, plus the internal ``_s_`` columns ``user_state`` reads. Without ``carried`` ``events`` are all
    the known events; with it, the events the carried state has not seen."""
    a, b = day_index(first), day_index(last)
    ev = with_day_index(events).where(F.col("d") <= b)
    is_rating = F.col("event_type") == "rating"
    daily = ev.groupBy("user_id", "d").agg(
        *[F.sum(F.when(F.col("event_type") == t, 1).otherwise(0)).alias(f"n_{t}") for t in EVENT_TYPES],
        F.count(F.lit(1)).alias("n_events"),
        F.sum(F.when(is_rating, F.col("value"))).alias("rating_sum"),
        F.sum(F.when(is_rating, 1).otherwise(0)).alias("rating_n"),
        F.max("ts").alias("last_ts"),
    )
    # Three consumers (base, first day, grid): without the cache each would aggregate the events again.
    daily = daily.persist(StorageLevel.MEMORY_AND_DISK)

    grid_start = a - USER_WINDOW_DAYS + 1
    counts = [f"n_{t}" for t in EVENT_TYPES] + ["n_events"]
    base = daily.where(F.col("d") < grid_start).groupBy("user_id").agg(
        *[F.sum(c).alias(f"base_{c}") for c in counts],
        F.sum("rating_sum").alias("base_rating_sum"),
        F.sum("rating_n").alias("base_rating_n"),
        F.max("last_ts").alias("base_last_ts"),
    )
    grid = _grid(_first_days(daily, "user_id", carried), "user_id", grid_start, b)
    g = grid.join(daily.where(F.col("d") >= grid_start), ["user_id", "d"], "left").join(base, "user_id", "left")
    g = _with_carried(g, "user_id", grid_start, carried)
    w = Window.partitionBy("user_id").orderBy("d")
    run = w.rowsBetween(Window.unboundedPreceding, 0)
    cols = [F.col("user_id"), F.col("d")]
    for t in EVENT_TYPES + ("events",):
        c = f"n_{t}"
        if t != "events":  # the grid has one row per (user, day): the 1-day window is the row itself
            known = F.coalesce(F.col(c), F.lit(0)) + F.coalesce(_carried(carried, c, "long"), F.lit(0))
            cols += [known.cast("long").alias(f"{c}_1d"), _window_sum(known, w, -6).alias(f"{c}_7d"),
                     _window_sum(known, w, -29).alias(f"{c}_30d")]
        cols.append(_all_time(c, f"base_{c}", carried, f"{c}_all", run).cast("long").alias(f"{c}_all"))
    rating_sum = _all_time("rating_sum", "base_rating_sum", carried, "rating_sum", run, "double")
    rating_n = _all_time("rating_n", "base_rating_n", carried, "rating_n", run)
    last_ts = F.greatest(F.max("last_ts").over(run), F.col("base_last_ts"), _carried(carried, "last_ts", "timestamp"))
    cols += [
        F.when(rating_n > 0, rating_sum / rating_n).alias("mean_rating"),
        F.col("first_d").alias("_s_first_d"),
        rating_sum.alias("_s_rating_sum"),
        rating_n.cast("long").alias("_s_rating_n"),
        last_ts.alias("_s_last_ts"),
    ]
    out = g.select(*cols)
    end_of_day = (F.col("d") + 1) * SECONDS_PER_DAY
    out = out.withColumn("recency_days", (end_of_day - F.unix_micros("_s_last_ts") / 1_000_000) / SECONDS_PER_DAY)
    return out.withColumn("ds", _ds_col()).withColumnRenamed("d", "_s_d").withColumnRenamed("n_events_all", "n_events")


def user_state(grid: DataFrame, last: dt.date) -> Carried:
    """The state as of ``last`` (what the next day's run carries) from the grid of ``user_features``."""
    b = day_index(last)
    totals = grid.where(F.col("_s_d") == b).select(
        "user_id", F.col("_s_first_d").alias("first_d"), *[F.col(f"n_{t}_all") for t in EVENT_TYPES],
        F.col("n_events").alias("n_events_all"), F.col("_s_rating_sum").alias("rating_sum"),
        F.col("_s_rating_n").alias("rating_n"), F.col("_s_last_ts").alias("last_ts"),
    )
    active = sum((F.col(f"n_{t}_1d") for t in EVENT_TYPES), F.lit(0)) > 0
    days = grid.where((F.col("_s_d") >= b - USER_WINDOW_DAYS + 1) & active).select(
        "user_id", F.col("_s_d").alias("d"), *[F.col(f"n_{t}_1d").alias(f"n_{t}") for t in EVENT_TYPES])
    return Carried(totals, days)


def item_features(events: DataFrame, first: dt.date, last: dt.date, carried: Carried | None = None) -> DataFrame:
    """One row per (item, day) of the grid: popularity windows, 7-day trend, mean rating, age, plus the internal
    ``_s_`` columns (see ``user_features``)."""
    a, b = day_index(first), day_index(last)
    ev = with_day_index(events).where(F.col("d") <= b)
    is_rating = F.col("event_type") == "rating"
    daily = ev.groupBy("item_id", "d").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.when(is_rating, F.col("value"))).alias("rating_sum"),
        F.sum(F.when(is_rating, 1).otherwise(0)).alias("rating_n"),
    )
    daily = daily.persist(StorageLevel.MEMORY_AND_DISK)  # three consumers, as for users
    grid_start = a - ITEM_WINDOW_DAYS + 1
    base = daily.where(F.col("d") < grid_start).groupBy("item_id").agg(
        F.sum("n").alias("base_n"), F.sum("rating_sum").alias("base_rating_sum"), F.sum("rating_n").alias("base_rating_n")
    )
    grid = _grid(_first_days(daily, "item_id", carried), "item_id", grid_start, b)
    g = grid.join(daily.where(F.col("d") >= grid_start), ["item_id", "d"], "left").join(base, "item_id", "left")
    g = _with_carried(g, "item_id", grid_start, carried)
    w = Window.partitionBy("item_id").orderBy("d")
    run = w.rowsBetween(Window.unboundedPreceding, 0)
    known = F.coalesce(F.col("n"), F.lit(0)) + F.coalesce(_carried(carried, "n", "long"), F.lit(0))
    pop_7d, pop_prev_7d = _window_sum(known, w, -6), _window_sum(known, w, -13, -7)
    pop_30d = _window_sum(known, w, -29)
    rating_sum = _all_time("rating_sum", "base_rating_sum", carried, "rating_sum", run, "double")
    rating_n = _all_time("rating_n", "base_rating_n", carried, "rating_n", run)
    pop_all = _all_time("n", "base_n", carried, "n_all", run)
    out = g.select(
        "item_id",
        "d",
        pop_7d.alias("pop_7d"),
        pop_30d.alias("pop_30d"),
        pop_all.cast("long").alias("pop_all"),
        ((pop_7d + 1) / (pop_prev_7d + 1)).alias("trend_7d"),
        F.when(rating_n > 0, rating_sum / rating_n).alias("mean_rating"),
        (F.col("d") - F.col("first_d")).cast("int").alias("age_days"),
        known.cast("long").alias("_s_n"),
        F.col("first_d").alias("_s_first_d"),
        rating_sum.alias("_s_rating_sum"),
        rating_n.cast("long").alias("_s_rating_n"),
    )
    return out.withColumn("ds", _ds_col()).withColumnRenamed("d", "_s_d")


def item_state(grid: DataFrame, last: dt.date) -> Carried:
    b = day_index(last)
    totals = grid.where(F.col("_s_d") == b).select(
        "item_id", F.col("_s_first_d").alias("first_d"), F.col("pop_all").alias("n_all"),
        F.col("_s_rating_sum").alias("rating_sum"), F.col("_s_rating_n").alias("rating_n"))
    days = grid.where((F.col("_s_d") >= b - ITEM_WINDOW_DAYS + 1) & (F.col("_s_n") > 0)).select(
        "item_id", F.col("_s_d").alias("d"), F.col("_s_n").alias("n"))
    return Carried(totals, days)
