"""Clean step: parse the all-string raw rows, give every invalid row a reason, drop exact duplicates.

Each raw row ends in exactly one of three places, so input = valid + quarantined + duplicates holds by
construction: ``quarantined`` (first failing rule wins, the original row is kept), ``duplicates``
(an exact copy of a valid event seen earlier in this batch or in already-published history), ``valid``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from freshrec.schemas import EVENT_TYPES
from spark_jobs.raw_reader import CORRUPT, LANDED, RAW_ROW, original_row

# Quarantine reasons, in the order they are checked (the first failing rule names the row).
MALFORMED = "malformed_line"
EMPTY_ID = "empty_id"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
NON_NUMERIC_VALUE = "non_numeric_value"
RATING_OUT_OF_RANGE = "rating_out_of_range"
NEGATIVE_WEIGHT = "negative_weight"
UNPARSEABLE_TS = "unparseable_ts"
FUTURE_TS = "future_ts"
REASONS = (MALFORMED, EMPTY_ID, UNKNOWN_EVENT_TYPE, NON_NUMERIC_VALUE, RATING_OUT_OF_RANGE, NEGATIVE_WEIGHT,
           UNPARSEABLE_TS, FUTURE_TS)

EVENT_COLUMNS = ("user_id", "item_id", "event_type", "value", "ts")


@dataclass(frozen=True)
class CleanRules:
    rating_min: float
    rating_max: float
    future_tolerance_s: int
    # Wall clock of the run (epoch seconds): nothing may be later than min(end of landing day, now) + tolerance.
    now_epoch_s: float


@dataclass(frozen=True)
class CleanResult:
    classified: DataFrame   # every raw row: typed columns, raw_* strings, landed, reason (null = passed the rules)
    deduplicated: DataFrame  # rows that passed the rules: EVENT_COLUMNS, ds (event day), landed, duplicate (bool)

    @property
    def valid(self) -> DataFrame:
        return self.deduplicated.where(~F.col("duplicate")).drop("duplicate")

    @property
    def quarantined(self) -> DataFrame:
        """The original row and the reason, plus the raw strings for easy inspection."""
        bad = self.classified.where(F.col("reason").isNotNull())
        return bad.select(LANDED, "reason", original_row().alias(RAW_ROW), *[F.col(f"raw_{c}").alias(c) for c in EVENT_COLUMNS])


def _parse_ts(raw: Column) -> Column:
    """ISO-8601 (with or without zone, 'T' or space) or epoch seconds (integer or fractional), UTC."""
    text = F.trim(raw)
    is_epoch = text.rlike(r"^-?\d+(\.\d+)?$")
    epoch = F.expr("try_cast(trim(ts) as double)")
    return F.when(is_epoch, F.timestamp_micros((epoch * 1_000_000).cast("long"))).otherwise(
        F.expr("try_cast(trim(ts) as timestamp)")
    )


def parse_and_classify(raw: DataFrame, rules: CleanRules) -> DataFrame:
    """Raw strings -> typed columns plus a ``reason`` (null when the row is valid)."""
    event_type = F.lower(F.trim(F.col("event_type")))
    value = F.expr("try_cast(trim(value) as double)")
    ts = _parse_ts(F.col("ts"))
    landed_end = F.unix_timestamp(F.to_timestamp(F.col(LANDED), "yyyy-MM-dd")) + 86_400
    horizon = F.least(landed_end, F.lit(rules.now_epoch_s)) + F.lit(rules.future_tolerance_s)
    df = raw.select(
        F.trim(F.col("user_id")).alias("user_id"),
        F.trim(F.col("item_id")).alias("item_id"),
        event_type.alias("event_type"),
        value.alias("value"),
        ts.alias("ts"),
        F.col(LANDED),
        F.col(CORRUPT),
        *[F.col(c).alias(f"raw_{c}") for c in EVENT_COLUMNS],
    )
    v = F.col("value")
    reason = (
        F.when(F.col(CORRUPT).isNotNull(), F.lit(MALFORMED))
        .when(F.coalesce(F.length("user_id"), F.lit(0)) == 0, F.lit(EMPTY_ID))
        .when(F.coalesce(F.length("item_id"), F.lit(0)) == 0, F.lit(EMPTY_ID))
        .when(~F.coalesce(F.col("event_type").isin(*EVENT_TYPES), F.lit(False)), F.lit(UNKNOWN_EVENT_TYPE))
        .when(v.isNull() | F.isnan(v) | (F.abs(v) == float("inf")), F.lit(NON_NUMERIC_VALUE))
        .when((F.col("event_type") == "rating") & ((v < rules.rating_min) | (v > rules.rating_max)), F.lit(RATING_OUT_OF_RANGE))
        .when((F.col("event_type") != "rating") & (v < 0), F.lit(NEGATIVE_WEIGHT))
        .when(F.col("ts").isNull(), F.lit(UNPARSEABLE_TS))
        .when(F.unix_micros(F.col("ts")) / 1_000_000 > horizon, F.lit(FUTURE_TS))
    )
    return df.withColumn("reason", reason)


def clean(raw: DataFrame, history_keys: DataFrame | None, rules: CleanRules) -> CleanResult:
    """Classify raw rows and mark exact duplicates among the ones that pass the rules.

    ``history_keys`` holds EVENT_COLUMNS of events already published from earlier landings; a batch row
    identical to one of them is a duplicate (a re-delivery), never a second event. Within the batch the
    copy from the earliest landing day is kept.
    """
    classified = parse_and_classify(raw, rules)
    candidates = classified.where(F.col("reason").isNull()).select(*EVENT_COLUMNS, LANDED, F.lit(1).alias("_new"))
    if history_keys is not None:
        # History sorts first (landed "" < any date), so a re-delivered event is the duplicate.
        candidates = candidates.unionByName(history_keys.select(*EVENT_COLUMNS, F.lit("").alias(LANDED), F.lit(0).alias("_new")))
    rank = F.row_number().over(Window.partitionBy(*EVENT_COLUMNS).orderBy(LANDED))
    deduplicated = candidates.withColumn("_rank", rank).where(F.col("_new") == 1).select(
        *EVENT_COLUMNS, F.to_date("ts").cast("string").alias("ds"), LANDED, (F.col("_rank") > 1).alias("duplicate")
    )
    return CleanResult(classified=classified, deduplicated=deduplicated)
