"""Training examples: every clean event of a day is a positive carrying the user and item features as of
the end of the *previous* day (strictly before the event: no leakage), plus seeded, popularity-aware
negatives drawn from that same previous-day popularity.

Sampling is deterministic without any driver-side randomness: each day's items fill ``SLOTS`` slots in
proportion to popularity**0.75 (word2vec-style smoothing), and a negative picks the slot named by a hash
of (seed, user, item, ts, j). Same input and seed -> same rows, on any cluster.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from freshrec.core.schemas import EVENT_WEIGHTS

SLOTS = 10_000
SMOOTHING = 0.75
# The features an example carries (a compact, model-ready subset; the full tables sit beside it).
USER_COLUMNS = ("n_events", "n_view_7d", "n_click_7d", "n_rating_7d", "n_purchase_7d", "n_click_30d", "n_purchase_30d",
                "mean_rating", "n_ratings_all", "recency_days")
ITEM_COLUMNS = ("pop_1d", "pop_7d", "pop_30d", "pop_all", "trend_7d", "trend_30d", "mean_rating", "age_days", "category")


def _prefixed(df: DataFrame, key: str, prefix: str, columns: tuple[str, ...]) -> DataFrame:
    """Feature columns renamed with a prefix, keyed by (key, ds of the day they are used on: the next one)."""
    shifted = F.date_add(F.to_date("ds"), 1).cast("string").alias("ds")
    return df.select(F.col(key), shifted, *[F.col(c).alias(prefix + c) for c in columns if c in df.columns])


def sampling_slots(item_features: DataFrame) -> DataFrame:
    """(ds, slot, item_id): each item of the previous day's 30-day popularity owns a share of SLOTS slots."""
    pop = item_features.where(F.col("pop_30d") > 0).select(
        F.date_add(F.to_date("ds"), 1).cast("string").alias("ds"), "item_id", F.pow(F.col("pop_30d"), SMOOTHING).alias("w")
    )
    day = Window.partitionBy("ds")
    ordered = day.orderBy("item_id").rowsBetween(Window.unboundedPreceding, 0)
    total = F.sum("w").over(day)
    hi = F.floor(F.sum("w").over(ordered) / total * SLOTS).cast("int")
    lo = F.floor((F.sum("w").over(ordered) - F.col("w")) / total * SLOTS).cast("int")
    bounds = pop.select("ds", "item_id", lo.alias("lo"), hi.alias("hi")).where(F.col("hi") > F.col("lo"))
    return bounds.select("ds", "item_id", F.explode(F.sequence("lo", F.col("hi") - 1)).alias("slot"))


def training_examples(events: DataFrame, user_features: DataFrame, item_features: DataFrame, negatives: int, seed: int,
                      broadcast_users: bool = True) -> DataFrame:
    """Positives (label 1, weight by event type or stars) and negatives (label 0) for the events given.

    One pass over the events: each event expands into draw 0 (itself, the positive) and draws 1..negatives,
    whose item is looked up in the broadcast slot table. The feature tables (one row per key and day, small
    next to the examples) are broadcast too, so the examples are never shuffled: they keep the events'
    partitioning all the way to the writer. ``broadcast_users=False`` is for user tables too big to ship.
    """
    weight = F.when(F.col("event_type") == "rating", F.col("value")).otherwise(
        F.coalesce(*[F.when(F.col("event_type") == t, F.lit(w)) for t, w in EVENT_WEIGHTS.items()])
    )
    draws = events.select(
        "user_id", F.col("item_id").alias("pos_item"), "event_type", weight.cast("double").alias("pos_weight"), "ts", "ds",
        F.explode(F.sequence(F.lit(0), F.lit(negatives))).alias("j"),
    )
    positive = F.col("j") == 0
    slot = F.when(~positive, F.pmod(F.xxhash64(F.lit(seed), "user_id", "pos_item", "ts", F.col("j") - 1), F.lit(SLOTS)).cast("int"))
    # Positives carry a null slot: they match no slot row and keep a null drawn item.
    drawn = draws.withColumn("slot", slot).join(F.broadcast(sampling_slots(item_features)), ["ds", "slot"], "left")
    kept = positive | (F.col("item_id").isNotNull() & (F.col("item_id") != F.col("pos_item")))
    examples = drawn.where(kept).select(
        "user_id",
        F.when(positive, F.col("pos_item")).otherwise(F.col("item_id")).alias("item_id"),
        F.when(positive, F.col("event_type")).alias("event_type"),
        "ts",
        "ds",
        positive.cast("int").alias("label"),
        F.when(positive, F.col("pos_weight")).otherwise(F.lit(1.0)).alias("weight"),
    )
    users = _prefixed(user_features, "user_id", "u_", USER_COLUMNS)
    items = _prefixed(item_features, "item_id", "i_", ITEM_COLUMNS)
    joined = examples.join(F.broadcast(users) if broadcast_users else users, ["user_id", "ds"], "left")
    return joined.join(F.broadcast(items), ["item_id", "ds"], "left")
