"""Clean step: parse the all-string raw rows, give every invalid row a reason, drop exact duplicates.

Each raw row ends in exactly one of three places, so input = valid + quarantined + duplicates holds by
construction: ``quarantined`` (first failing rule wins, the original row is kept), ``duplicates``
(an exact copy of a valid event seen earlier in this batch or in already-published history), ``valid``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from freshrec.schemas import EVENT_TYPES
from spark_jobs.raw_reader import CORRUPT, LANDED, RAW_ROW, VALUE_NUM, original_row

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
    classified: DataFrame  # every raw row: typed columns, raw_* strings, landed, reason (null = passed the rules)
    # Every distinct event known to the run (the batch's new ones and the history it was checked against):
    # EVENT_COLUMNS, d (event day index), ds, landed (null for history), hash-partitioned by user_id.
    events: DataFrame

    @property
    def valid(self) -> DataFrame:
        """The batch's new events: the first copy of each, from the earliest landing day."""
        return self.events.where(F.col(LANDED).isNotNull())

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
    value = F.coalesce(F.col(VALUE_NUM), F.expr("try_cast(trim(value) as double)"))
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


def day_index(ts: Column) -> Column:
    """UTC day number since 1970-01-01 of a timestamp (integer arithmetic, no date parsing)."""
    return F.floor(F.unix_micros(ts) / F.lit(86_400_000_000)).cast("int")


def day_string(d: Column) -> Column:
    return F.date_add(F.lit("1970-01-01").cast("date"), d).cast("string")


def dedup(classified: DataFrame, history: DataFrame | None, partitions: int) -> CleanResult:
    """Drop exact copies of events among the classified rows that pass the rules.

    ``history`` holds EVENT_COLUMNS of events already published from earlier landings; a batch row identical
    to one of them is a duplicate (a re-delivery), never a second event. Copies share ``ts``, hence the event
    day: history needs only the event days the batch touches. Within the batch the copy from the
    earliest landing day is kept. One aggregation does it (the minimum landing day per distinct event, history
    counting as earlier than any landing), after a single shuffle by user: every later per-user computation
    of the run (daily aggregates, windows, sequences) reuses that partitioning instead of shuffling again.
    """
    landed_d = F.datediff(F.to_date(F.col(LANDED)), F.lit("1970-01-01").cast("date"))
    # Rows that failed a rule travel along with a null landing day and only make a group of their own, dropped
    # after the aggregation (min ignores nulls: a group is kept iff one of its rows passed). Filtering before
    # the shuffle instead would let the optimizer push the whole rule chain into the scan's filter, parsing
    # every timestamp three times.
    candidates = classified.select(*EVENT_COLUMNS, F.when(F.col("reason").isNull(), landed_d).alias("_landed_d"))
    if history is not None:
        candidates = candidates.unionByName(history.select(*EVENT_COLUMNS, F.lit(-1).alias("_landed_d")))
    distinct = (candidates.repartition(partitions, "user_id").groupBy(*EVENT_COLUMNS)
                .agg(F.min("_landed_d").alias("_keep")).where(F.col("_keep").isNotNull()))
    d = day_index(F.col("ts"))
    events = distinct.select(
        *EVENT_COLUMNS, d.alias("d"), day_string(d).alias("ds"),
        F.when(F.col("_keep") >= 0, day_string(F.col("_keep"))).alias(LANDED),
    )
    return CleanResult(classified=classified, events=events)
