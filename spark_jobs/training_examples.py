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

from freshrec.schemas import EVENT_WEIGHTS

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


def training_examples(events: DataFrame, user_features: DataFrame, item_features: DataFrame, negatives: int, seed: int) -> DataFrame:
    """Positives (label 1, weight by event type or stars) and negatives (label 0) for the events given."""
    weight = F.when(F.col("event_type") == "rating", F.col("value")).otherwise(
        F.coalesce(*[F.when(F.col("event_type") == t, F.lit(w)) for t, w in EVENT_WEIGHTS.items()])
    )
    positives = events.select("user_id", "item_id", "event_type", "ts", "ds", F.lit(1).alias("label"), weight.cast("double").alias("weight"))
    parts = [positives]
    if negatives > 0:
        draws = positives.select(
            "user_id", F.col("item_id").alias("pos_item"), "ts", "ds", F.explode(F.sequence(F.lit(0), F.lit(negatives - 1))).alias("j")
        )
        slot = F.pmod(F.xxhash64(F.lit(seed), "user_id", "pos_item", "ts", "j"), F.lit(SLOTS)).cast("int")
        drawn = draws.withColumn("slot", slot).join(F.broadcast(sampling_slots(item_features)), ["ds", "slot"])
        parts.append(
            drawn.where(F.col("item_id") != F.col("pos_item")).select(
                "user_id", "item_id", F.lit(None).cast("string").alias("event_type"), "ts", "ds",
                F.lit(0).alias("label"), F.lit(1.0).alias("weight"),
            )
        )
    examples = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    users = _prefixed(user_features, "user_id", "u_", USER_COLUMNS)
    items = _prefixed(item_features, "item_id", "i_", ITEM_COLUMNS)
    return examples.join(users, ["user_id", "ds"], "left").join(F.broadcast(items), ["item_id", "ds"], "left")
