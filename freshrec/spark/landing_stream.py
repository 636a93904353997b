"""The landing job: sealed segments of the ingestion log -> raw lake day partitions, exactly once.

    python -m freshrec.spark.landing_stream --home H                                      # what is sealed now, then stop
    python -m freshrec.spark.landing_stream --home H --continuous --trigger-interval 10s  # production: keeps landing

A Structured Streaming query, checkpointed in ``lake/landing/_checkpoint``, reads the sealed segments of
``lake/landing/events/`` (JSON lines; the ``_open`` folder is hidden from Spark's file source) and moves each
segment it has landed to ``lake/landing/_archive/`` (``cleanSource=archive``: Spark archives a batch's files once
the batch is committed and the next one is planned, so the last batch's segments wait for the next run).

Duplicates. A client retry or a replayed request repeats an ``event_id``: the stream drops repeats within
DEDUP_WINDOW of ``ingested_at`` (``dropDuplicatesWithinWatermark``), and the clean stage drops any event_id it has
published already (beyond the window). Rows older than the watermark (the newest ``ingested_at`` of earlier
batches minus DEDUP_WINDOW) are dropped by Spark: an availableNow run is one batch, so that takes a segment sealed
more than a day after the newest events of the previous run; the summary counts them (``dropped_late``).

Exactly once. ``foreachBatch`` writes batch N's manifest (``raw/events/_stream/batch-N.json``: where each UTC day
of ``ingested_at`` goes, and per target day and writer the seq range and event count) before any data, then one
Parquet file per target day, ``ds=D/stream-bN.parquet``, under a temporary name and renamed. Spark commits batch N
to the checkpoint only after that; a crash before the commit replays batch N with the same input and dedup state,
and the replay reuses the recorded routing, so it rewrites the same files with the same rows.

Routing. Events go to the day of their ``ingested_at``, except when that day's features are published already:
then to the day after the newest published features day. An incremental features run never rereads a processed
day's landing, so a late segment (a crashed writer's, sealed by the next run) would otherwise never reach features.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import logging
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from freshrec.core.errors import ArtifactIntegrityError, StageFailed
from freshrec.core.eventlog import SEGMENT_SUFFIX, seal_orphans
from freshrec.core.events import Watermark
from freshrec.core.layout import Layout
from freshrec.core.settings import Settings, load_settings
from freshrec.spark.session import build_session

log = logging.getLogger("freshrec.spark.landing")
LOG_SCHEMA = ("event_id string, user_id string, item_id string, event_type string, value double, ts string, "
              "ingested_at string, writer string, seq long")
DATA_COLUMNS = ("user_id", "item_id", "event_type", "value", "ts", "event_id")  # a landed file's columns
DEDUP_WINDOW = "1 day"
LOCK_FILE = ".landing.lock"  # beside the checkpoint: one query at a time may use it


class LandingBusy(Exception):
    """Another landing job (typically the continuous one) holds the checkpoint."""


def batch_manifest_path(layout: Layout, batch_id: int) -> Path:
    return layout.stream_batches / f"batch-{batch_id:010d}.json"


def data_file_name(batch_id: int) -> str:
    return f"stream-b{batch_id:010d}.parquet"


def route_days(days: Iterable[str], published: list[dt.date]) -> dict[str, str]:
    """Target landing day per UTC day of ingested_at (see the module doc)."""
    if not published:
        return {day: day for day in sorted(days)}
    done = {d.isoformat() for d in published}
    after = (published[-1] + dt.timedelta(days=1)).isoformat()
    return {day: after if day in done else day for day in sorted(days)}


def build_manifest(batch_id: int, query_id: str, routes: dict[str, str], positions: list[Row]) -> dict:
    """The batch manifest from the per (ingested day, writer) positions of the batch's events."""
    days: dict[str, dict] = {}
    for row in positions:
        target = routes[row["day"]]
        entry = days.setdefault(target, {"file": f"ds={target}/{data_file_name(batch_id)}", "writers": {}})
        known = entry["writers"].get(row["writer"], {"min_seq": row["min_seq"], "max_seq": row["max_seq"], "events": 0})
        entry["writers"][row["writer"]] = {"min_seq": min(known["min_seq"], row["min_seq"]),
                                           "max_seq": max(known["max_seq"], row["max_seq"]),
                                           "events": known["events"] + row["events"]}
    for entry in days.values():
        entry["writers"] = dict(sorted(entry["writers"].items()))
    return {"batch_id": batch_id, "query_id": query_id, "routes": routes, "days": dict(sorted(days.items()))}


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class BatchLander:
    """The ``foreachBatch`` function: one micro-batch into the raw lake (manifest first, then the files)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        batch = batch.withColumn("_day", F.to_date("_ingested").cast("string")).persist()
        try:
            positions = (batch.groupBy(F.col("_day").alias("day"), "writer")
                         .agg(F.min("seq").alias("min_seq"), F.max("seq").alias("max_seq"), F.count(F.lit(1)).alias("events"))
                         .collect())
            if positions:  # else a no-data batch (the watermark moved): nothing to land
                manifest = self._manifest(batch_id, positions)
                self._write(batch, batch_id, manifest)
        finally:
            batch.unpersist()

    def _manifest(self, batch_id: int, positions: list[Row]) -> dict:
        path = batch_manifest_path(self.layout, batch_id)
        query_id = json.loads((self.layout.stream_checkpoint / "metadata").read_text())["id"]
        if not path.is_file():
            routes = route_days({row["day"] for row in positions}, self.layout.feature_days())
            manifest = build_manifest(batch_id, query_id, routes, positions)
            write_json_atomic(path, manifest)
            return manifest
        manifest = json.loads(path.read_text())
        if manifest.get("query_id") != query_id:
            # Batch ids restart with a new checkpoint: landing on would overwrite the earlier batch's files.
            raise ArtifactIntegrityError(f"{path} was written by another checkpoint (query {manifest.get('query_id')}, now "
                               f"{query_id}); move the old manifests aside before landing with a new checkpoint")
        unrouted = {row["day"] for row in positions} - set(manifest["routes"])
        if unrouted:
            raise ArtifactIntegrityError(f"replayed batch {batch_id} holds days {sorted(unrouted)} its manifest never routed")
        log.info("batch %d is a replay: landing it where its manifest says", batch_id)
        return manifest

    def _write(self, batch: DataFrame, batch_id: int, manifest: dict) -> None:
        target = F.element_at(F.create_map(*[F.lit(x) for pair in manifest["routes"].items() for x in pair]), F.col("_day"))
        tmp = self.layout.stream_batches / f".b{batch_id:010d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        # One task per target day, hence one file per day.
        (batch.select(*DATA_COLUMNS, target.alias("_target")).repartition("_target")
         .write.partitionBy("_target").parquet(str(tmp)))
        for day in manifest["days"]:
            parts = sorted((tmp / f"_target={day}").glob("part-*.parquet"))
            if len(parts) != 1:
                raise StageFailed(f"batch {batch_id}: expected one file for {day}, Spark wrote {len(parts)}")
            final = self.layout.raw_partition(dt.date.fromisoformat(day)) / data_file_name(batch_id)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(parts[0], final)
        shutil.rmtree(tmp)


def start_query(spark: SparkSession, layout: Layout, trigger: dict) -> StreamingQuery:
    segments = (spark.readStream.schema(LOG_SCHEMA)
                .option("mode", "FAILFAST")  # every line was written and fsynced by the log: one that fails to parse is damage
                .option("pathGlobFilter", f"*{SEGMENT_SUFFIX}")
                .option("cleanSource", "archive").option("sourceArchiveDir", str(layout.landing_archive))
                .json(str(layout.landing)))
    events = (segments.withColumn("_ingested", F.col("ingested_at").cast("timestamp"))
              .withWatermark("_ingested", DEDUP_WINDOW)
              .dropDuplicatesWithinWatermark(["event_id"]))
    return (events.writeStream.queryName("freshrec-landing").foreachBatch(BatchLander(layout))
            .option("checkpointLocation", str(layout.stream_checkpoint)).trigger(**trigger).start())


def lock_checkpoint(layout: Layout) -> int:
    """Lock the checkpoint (held until the returned descriptor is closed): two queries on one checkpoint would
    both write its batch logs."""
    path = layout.stream_checkpoint.parent / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LandingBusy(f"another landing job holds {path}") from None
    return fd


def run_landing(spark: SparkSession, settings: Settings, available_now: bool = True,
                trigger_interval_s: float = 10.0) -> dict:
    """Land the ingestion log: what is sealed now (``available_now``), or continuously until stopped.

    Returns the summary: landed batch ids, events per target day, rows dropped as too late, orphans sealed.
    """
    layout = Layout(settings.home)
    try:
        lock = lock_checkpoint(layout)
    except LandingBusy as busy:
        log.info("%s: nothing to do here", busy)
        return {"batches": [], "events": {}, "dropped_late": 0, "sealed_orphans": 0, "skipped": str(busy)}
    try:
        sealed = len(seal_orphans(layout))
        layout.landing.mkdir(parents=True, exist_ok=True)
        layout.landing_archive.mkdir(parents=True, exist_ok=True)
        trigger = {"availableNow": True} if available_now else {"processingTime": f"{trigger_interval_s} seconds"}
        query = start_query(spark, layout, trigger)
        try:
            if available_now:
                query.awaitTermination()
            else:
                # Writers that die meanwhile leave open segments behind: seal them for the next batch.
                # The stub says int; pyspark takes any positive number of seconds (it sends int(timeout * 1000) ms).
                while not query.awaitTermination(trigger_interval_s):  # type: ignore[arg-type]
                    sealed += len(seal_orphans(layout))
        except KeyboardInterrupt:  # the way to stop a continuous run by hand; the checkpoint makes any stop safe
            log.info("stopping the landing query")
        finally:
            if query.isActive:
                query.stop()
        return summarize(layout, query.recentProgress, sealed)
    finally:
        os.close(lock)


def summarize(layout: Layout, progress: list, sealed: int) -> dict:
    events: Counter = Counter()
    batches = []
    for batch_id in sorted({p["batchId"] for p in progress}):
        path = batch_manifest_path(layout, batch_id)
        if path.is_file():
            batches.append(batch_id)
            for day, entry in json.loads(path.read_text())["days"].items():
                events[day] += sum(w["events"] for w in entry["writers"].values())
    dropped = sum(op.get("numRowsDroppedByWatermark", 0) for p in progress for op in p.get("stateOperators") or [])
    if dropped:
        log.warning("%d log rows were older than the dedup watermark and were not landed", dropped)
    return {"batches": batches, "events": dict(sorted(events.items())), "dropped_late": dropped, "sealed_orphans": sealed}


# --- what a snapshot holds of the log (read by the features job) ----------------------------------------------

def read_batch_manifests(layout: Layout) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(layout.stream_batches.glob("batch-*.json"))]


def log_watermark(manifests: list[dict], read_files: set[str], last: dt.date) -> Watermark:
    """The watermark of a snapshot as of ``last`` built from the raw files ``read_files`` (relative to the raw root).

    Per writer: the highest seq at or below which every landed event of the writer sits in a file the snapshot
    read. A writer's events land in seq order, but a range routed to a later day (or landed after its day was
    processed) sits in a file the snapshot did not read: the watermark stops below it, so those events stay in
    the live tail instead of being lost from the online state.
    """
    covered: dict[str, int] = {}
    missing: dict[str, float] = {}
    for manifest in manifests:
        for entry in manifest["days"].values():
            read = entry["file"] in read_files
            for writer, pos in entry["writers"].items():
                if read:
                    covered[writer] = max(covered.get(writer, 0), pos["max_seq"])
                else:
                    missing[writer] = min(missing.get(writer, math.inf), pos["min_seq"])
    writers = {w: int(min(top, missing.get(w, math.inf) - 1)) for w, top in covered.items()}
    until = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).timestamp()
    return Watermark(as_of=last.isoformat(), until_ts=until, writers=writers)


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|m)?", text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 10s, 500ms or 2m, got {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2) or "s"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="FreshRec landing job: the ingestion log into the raw lake")
    parser.add_argument("--home", type=Path, default=None, help="FRESHREC_HOME (default: from settings)")
    parser.add_argument("--continuous", action="store_true", help="keep landing every --trigger-interval until stopped")
    parser.add_argument("--trigger-interval", type=_seconds, default=10.0, help="micro-batch interval (default 10s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    settings = load_settings(**({"home": args.home} if args.home else {}))
    spark = build_session(settings, "freshrec-landing")
    spark.sparkContext.setLogLevel("WARN")
    try:
        summary = run_landing(spark, settings, available_now=not args.continuous, trigger_interval_s=args.trigger_interval)
    finally:
        spark.stop()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
