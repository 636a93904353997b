"""Clean step: parse the all-string raw rows, give every invalid row a reason, drop duplicates.

The rules, their order and their names are the rule table of ``freshrec.core.events`` (the one the ingestion API
applies to each posted event); this module is its Spark form, held to the same decision and reason on every
event by tests/spark_jobs/test_rule_parity.py. Values are read the same way on both sides: ids and strings
trimmed of what Python's ``str.strip`` removes, numbers and timestamps accepted only in the forms the Python
parsers accept (Spark's casts alone take more: ``1d``, hex floats, zone names).

Each raw row ends in exactly one of three places, so input = valid + quarantined + duplicates holds by
construction: ``quarantined`` (first failing rule wins, the original row is kept), ``duplicates`` (a copy of a
valid event seen earlier in this batch or in already-published history: the same ``event_id``, or for rows
without one an exact copy), ``valid``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from freshrec.core import events as rule_table
from freshrec.core.schemas import EVENT_TYPES
from freshrec.spark.raw_reader import COLUMNS, CORRUPT, EVENT_ID, LANDED, RAW_ROW, VALUE_NUM, original_row

REASONS = rule_table.REASONS  # quarantine reasons in rule order (importers of this module read them here)
EVENT_COLUMNS = ("user_id", "item_id", "event_type", "value", "ts")

# What Python's str.strip() removes (Spark's trim() removes spaces only).
WHITESPACE = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
# The textual forms freshrec.core.events accepts (Java regex syntax, same meaning as its Python regexes).
NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
EPOCH = r"^-?\d+(\.\d+)?$"
ISO = (r"^\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{1,2}(?::\d{1,2}(?:\.\d{1,9})?)?)?"
       r"\s*(?:Z|UTC|[+-]\d{2}(?::?\d{2})?)?$")
# Timestamps both sides represent: years 1 to 9999, as epoch seconds [MIN, MAX).
MIN_EPOCH_S, MAX_EPOCH_S = -62_135_596_800, 253_402_300_800
# Which of several new rows sharing an event_id is kept: the earliest landing, then the smallest content.
RANK = ("_keep", "ts", "user_id", "item_id", "event_type", "value")


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
    # EVENT_COLUMNS, event_id, d (event day index), ds, landed (null for history), hash-partitioned by user_id.
    events: DataFrame

    @property
    def valid(self) -> DataFrame:
        """The batch's new events: the first copy of each, from the earliest landing day."""
        return self.events.where(F.col(LANDED).isNotNull())

    @property
    def quarantined(self) -> DataFrame:
        """The original row and the reason, plus the raw strings for easy inspection."""
        bad = self.classified.where(F.col("reason").isNotNull())
        return bad.select(LANDED, "reason", original_row().alias(RAW_ROW), *[F.col(f"raw_{c}").alias(c) for c in COLUMNS])


def _strip(text: Column) -> Column:
    return F.btrim(text, F.lit(WHITESPACE))


def _parse_ts(raw: Column) -> Column:
    """ISO-8601 (with or without zone, 'T' or space) or epoch seconds (integer or fractional), UTC."""
    text = _strip(raw)
    epoch = text.try_cast("double")
    in_range = (epoch >= MIN_EPOCH_S) & (epoch < MAX_EPOCH_S)
    ts = (F.when(text.rlike(EPOCH), F.timestamp_micros(F.when(in_range, epoch * 1_000_000).cast("long")))
          .when(text.rlike(ISO), text.try_cast("timestamp")))
    micros = F.unix_micros(ts)
    return F.when((micros >= MIN_EPOCH_S * 1_000_000) & (micros < MAX_EPOCH_S * 1_000_000), ts)


def parse_and_classify(raw: DataFrame, rules: CleanRules) -> DataFrame:
    """Raw strings -> typed columns plus a ``reason`` (null when the row is valid)."""
    event_type = F.lower(_strip(F.col("event_type")))
    value_text = _strip(F.col("value"))
    value = F.coalesce(F.col(VALUE_NUM), F.when(value_text.rlike(NUMBER), value_text.try_cast("double")))
    landed_end = F.unix_timestamp(F.to_timestamp(F.col(LANDED), "yyyy-MM-dd")) + 86_400
    horizon = F.least(landed_end, F.lit(rules.now_epoch_s)) + F.lit(rules.future_tolerance_s)
    df = raw.select(
        _strip(F.col("user_id")).alias("user_id"),
        _strip(F.col("item_id")).alias("item_id"),
        event_type.alias("event_type"),
        value.alias("value"),
        _parse_ts(F.col("ts")).alias("ts"),
        _strip(F.col(EVENT_ID)).alias(EVENT_ID),
        F.col(LANDED),
        F.col(CORRUPT),
        *[F.col(c).alias(f"raw_{c}") for c in COLUMNS],
    )
    v, event_id = F.col("value"), F.col(EVENT_ID)
    reason = (
        F.when(F.col(CORRUPT).isNotNull(), F.lit(rule_table.MALFORMED))
        .when(F.coalesce(F.length("user_id"), F.lit(0)) == 0, F.lit(rule_table.EMPTY_ID))
        .when(F.coalesce(F.length("item_id"), F.lit(0)) == 0, F.lit(rule_table.EMPTY_ID))
        .when(event_id.isNotNull() & ((F.length(event_id) == 0) | (F.length(event_id) > rule_table.MAX_EVENT_ID_LENGTH)),
              F.lit(rule_table.INVALID_EVENT_ID))
        .when(~F.coalesce(F.col("event_type").isin(*EVENT_TYPES), F.lit(False)), F.lit(rule_table.UNKNOWN_EVENT_TYPE))
        .when(v.isNull() | F.isnan(v) | (F.abs(v) == float("inf")), F.lit(rule_table.NON_NUMERIC_VALUE))
        .when((F.col("event_type") == "rating") & ((v < rules.rating_min) | (v > rules.rating_max)),
              F.lit(rule_table.RATING_OUT_OF_RANGE))
        .when((F.col("event_type") != "rating") & (v < 0), F.lit(rule_table.NEGATIVE_WEIGHT))
        .when(F.col("ts").isNull(), F.lit(rule_table.UNPARSEABLE_TS))
        .when(F.unix_micros(F.col("ts")) / 1_000_000 > horizon, F.lit(rule_table.FUTURE_TS))
    )
    return df.withColumn("reason", reason)


def day_index(ts: Column) -> Column:
    """UTC day number since 1970-01-01 of a timestamp (integer arithmetic, no date parsing)."""
    return F.floor(F.unix_micros(ts) / F.lit(86_400_000_000)).cast("int")


def day_string(d: Column) -> Column:
    return F.date_add(F.lit("1970-01-01").cast("date"), d).cast("string")


def dedup(classified: DataFrame, history: DataFrame | None, known_ids: DataFrame | None, partitions: int) -> CleanResult:
    """Drop the copies among the classified rows that pass the rules.

    ``history`` holds EVENT_COLUMNS and event_id of events already published from earlier landings, on the event
    days the batch touches (copies share ``ts``, hence the event day); ``known_ids`` the event_ids of all of them
    (a reused event_id may come with another ``ts``). A batch row is a duplicate (a re-delivery, never a second
    event) when it repeats a known event_id or, without an event_id, is identical to an earlier event. Within the
    batch the copy from the earliest landing day is kept (ties: the smallest ts, user, item, type, value).

    Exact copies go in one aggregation (the minimum landing day per distinct event, history counting as earlier
    than any landing), after a single shuffle by user: every later per-user computation of the run (daily
    aggregates, windows, sequences) reuses that partitioning instead of shuffling again. Rows sharing an event_id
    with other content or another user are rare: they are found by a count per event_id and settled on the
    driver-sized set of contested ids, which is broadcast back without moving the events.
    """
    landed_d = F.datediff(F.to_date(F.col(LANDED)), F.lit("1970-01-01").cast("date"))
    columns = (*EVENT_COLUMNS, EVENT_ID)
    # Rows that failed a rule travel along with a null landing day and only make a group of their own, dropped
    # after the aggregation (min ignores nulls: a group is kept iff one of its rows passed). Filtering before
    # the shuffle instead would let the optimizer push the whole rule chain into the scan's filter, parsing
    # every timestamp three times.
    candidates = classified.select(*columns, F.when(F.col("reason").isNull(), landed_d).alias("_landed_d"))
    if history is not None:
        candidates = candidates.unionByName(history.select(*columns, F.lit(-1).alias("_landed_d")))
    distinct = (candidates.repartition(partitions, "user_id").groupBy(*columns)
                .agg(F.min("_landed_d").alias("_keep")).where(F.col("_keep").isNotNull()))
    distinct = distinct.join(F.broadcast(_contested_ids(distinct, known_ids)), EVENT_ID, "left")
    first_copy = (F.col("_keep") < 0) | F.col("_known").isNull() | (~F.col("_known") & (F.struct(*RANK) == F.col("_winner")))
    d = day_index(F.col("ts"))
    events = distinct.where(first_copy).select(
        *columns, d.alias("d"), day_string(d).alias("ds"),
        F.when(F.col("_keep") >= 0, day_string(F.col("_keep"))).alias(LANDED),
    )
    return CleanResult(classified=classified, events=events)


def _contested_ids(distinct: DataFrame, known_ids: DataFrame | None) -> DataFrame:
    """event_id, _known (already published: every new row with it is a copy), _winner (else the rank of the
    one new row kept) for the event_ids that more than one new distinct row, or a published event, carries."""
    # The id of a new row, as an expression over the aggregate's output: no filter on it (nor one a join infers)
    # can be pushed below the user shuffle, so these branches read that shuffle's output again (a reused
    # exchange) instead of scanning and parsing the raw files a second time.
    new = distinct.select(F.when(F.col("_keep") >= 0, F.col(EVENT_ID)).alias("_id"), *RANK).where(F.col("_id").isNotNull())
    tags = new.select("_id", F.lit(0).alias("_k"))
    if known_ids is not None:
        tags = tags.unionByName(known_ids.select(F.col(EVENT_ID).alias("_id"), F.lit(1).alias("_k")))
    counts = tags.groupBy("_id").agg(F.sum(1 - F.col("_k")).alias("_new"), F.max("_k").alias("_k"))
    contested = counts.where((F.col("_new") > 1) | ((F.col("_new") == 1) & (F.col("_k") == 1)))
    winners = (new.join(F.broadcast(contested.select("_id", "_k")), "_id")
               .groupBy("_id", "_k").agg(F.min(F.struct(*RANK)).alias("_winner")))
    return winners.select(F.col("_id").alias(EVENT_ID), (F.col("_k") == 1).alias("_known"), "_winner")
