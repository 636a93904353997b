"""The training input job: labelled event parts -> per-user ordered histories, with the online snapshot's code.

    python -m freshrec.spark.training_input --events PARTS.parquet --out HISTORIES.parquet
    spark-submit spark_jobs/training_input.py --events ... --out ...

The retrain's dataset stage cuts the clean events into parts by its evaluation protocol (the training part, all
interactions, the early-stopping part: each a set of events, labelled ``part``) and submits this job, which
builds every part's histories with ``online_snapshot.touches``, the function that builds the snapshot serving
reads: distinct items in last-interaction order (ties by item id), each with its last interaction time and the
summed strength of the user's events on it (``EVENT_WEIGHTS``; a rating counts its stars). A model therefore
trains on histories built and ordered by the same code as the ones it is served (tests/spark_jobs/
test_history_parity.py runs the features job and this one on one lake).

Output, one Parquet file: part, user_id, items (array<string>, oldest first), times (array<double>, epoch
seconds of each item's last interaction), signals (array<double>, log(1 + summed strength); null when the
events carry no event types).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from freshrec.core.schemas import EVENT_WEIGHTS
from freshrec.core.settings import load_settings
from freshrec.spark.online_snapshot import touches
from freshrec.spark.session import build_session
from freshrec.spark.staging import write_single_parquet

log = logging.getLogger("freshrec.spark.training_input")
SIGNAL_COLUMNS = ("event_type", "value")


def event_strength() -> Column:
    """How strong an event is: a rating's stars, else its type's weight (1 for a type without one)."""
    weights = F.create_map(*[F.lit(x) for pair in EVENT_WEIGHTS.items() for x in pair])
    kind = F.col("event_type")
    typed = F.coalesce(weights[kind], F.lit(1.0))
    return F.when(kind == "rating", F.col("value").cast("double")).otherwise(typed)


def part_histories(events: DataFrame) -> DataFrame:
    """part, user_id, items, times, signals (see the module docstring) from labelled events."""
    with_signal = set(SIGNAL_COLUMNS) <= set(events.columns)
    if with_signal:
        events = events.withColumn("_strength", event_strength())
    touch = touches(events, by=("part",), strength="_strength" if with_signal else None)
    entries = F.col("touch")
    signals = (F.transform(entries, lambda e: F.log1p(F.greatest(e["strength"], F.lit(0.0)))) if with_signal
               else F.lit(None).cast("array<double>"))
    return touch.select(
        "part", "user_id", F.transform(entries, lambda e: e["item_id"]).alias("items"),
        F.transform(entries, lambda e: F.unix_micros(e["last_ts"]) / F.lit(1e6)).alias("times"),
        signals.alias("signals"),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="FreshRec training input (per-user ordered histories per part)")
    parser.add_argument("--events", type=Path, required=True, help="Parquet: part, user_id, item_id, ts[, event_type, value]")
    parser.add_argument("--out", type=Path, required=True, help="the histories' Parquet file")
    parser.add_argument("--home", type=Path, default=None, help="FRESHREC_HOME (default: from settings)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    settings = load_settings(**({"home": args.home} if args.home else {}))
    spark = build_session(settings, "freshrec-training-input")
    spark.sparkContext.setLogLevel("WARN")
    started = time.perf_counter()
    try:
        events = spark.read.parquet(str(args.events))
        rows = write_single_parquet(part_histories(events), args.out, ["part", "user_id"])
    finally:
        spark.stop()
    print(json.dumps({"out": str(args.out), "rows": rows, "seconds": round(time.perf_counter() - started, 2)}))


if __name__ == "__main__":
    main()
