"""The features job: raw partitions of a day range -> clean events, quarantine, feature tables, online snapshot
(with the log watermark it covers) and per-day manifests, all in one Spark application.

    python -m freshrec.spark.features --home H --from 2026-01-01 --to 2026-01-03            # stage + publish
    spark-submit spark_jobs/features.py --from A --to B --staging DIR                     # stage only

With ``--staging`` the job only writes that directory (the features_daily DAG validates it and then
publishes with ``python -m freshrec.spark.publish``); without it the job stages under the lake and publishes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from freshrec.core.events import WATERMARK_FILE
from freshrec.core.layout import Layout
from freshrec.core.settings import Settings, load_settings
from freshrec.spark import staging as st
from freshrec.spark.clean import EVENT_COLUMNS, CleanRules, day_string, dedup, parse_and_classify
from freshrec.spark.clean import day_index as day_index_of
from freshrec.spark.feature_tables import day_index, item_features, item_state, published, user_features, user_state
from freshrec.spark.landing_stream import log_watermark, read_batch_manifests
from freshrec.spark.online_snapshot import merge_touches, snapshot_items, touches, user_sequences
from freshrec.spark.publish import RUN_FILE, publish_run
from freshrec.spark.raw_reader import EVENT_ID, LANDED, list_raw_files, read_raw
from freshrec.spark.session import build_session
from freshrec.spark.state import STATE_DIR, load_state, published_manifests, state_key, write_state, write_state_meta

log = logging.getLogger("freshrec.spark.features")
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
# Published clean events; partitions written before events carried an event_id read it as null.
CLEAN_SCHEMA = ("user_id string, item_id string, event_type string, value double, ts timestamp, event_id string, "
                "ds string, landed string")
# The clean step's output when there are no events at all.
EMPTY_EVENTS_SCHEMA = "user_id string, item_id string, event_type string, value double, ts timestamp, d int, ds string"


def day_range(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _has_parquet(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("*.parquet"))


def read_history(spark: SparkSession, layout: Layout, first: dt.date, last: dt.date,
                 event_days: set[int] | None = None) -> DataFrame | None:
    """Published clean events landed before the range with event day <= last (what the run may know); with
    ``event_days`` (a run carrying state) only those event days and the range's own (listed, not scanned)."""
    if not _has_parquet(layout.clean_events):
        return None
    base = spark.read.schema(CLEAN_SCHEMA).option("basePath", str(layout.clean_events))
    if event_days is None:
        df = base.parquet(str(layout.clean_events))
    else:
        days = {dt.date.fromordinal(EPOCH_ORDINAL + d) for d in event_days} | set(day_range(first, last))
        paths = [p for day in sorted(d for d in days if d <= last)
                 for p in sorted((layout.clean_events / f"ds={day.isoformat()}").glob("landed=*"))
                 if p.name.removeprefix("landed=") < first.isoformat() and _has_parquet(p)]
        if not paths:
            return None
        df = base.parquet(*map(str, paths))
    return df.where((F.col("landed") < first.isoformat()) & (F.col("ds") <= last.isoformat())).select(*EVENT_COLUMNS, EVENT_ID)


def read_known_ids(spark: SparkSession, layout: Layout, first: dt.date, last: dt.date) -> DataFrame | None:
    """The event_ids of the published clean events a run may know (see read_history), on every event day: a
    reused event_id need not share its copy's ``ts``. One column, and row groups without ids are skipped."""
    if not _has_parquet(layout.clean_events):
        return None
    df = spark.read.schema(CLEAN_SCHEMA).option("basePath", str(layout.clean_events)).parquet(str(layout.clean_events))
    known = (F.col("landed") < first.isoformat()) & (F.col("ds") <= last.isoformat()) & F.col(EVENT_ID).isNotNull()
    return df.where(known).select(EVENT_ID)


def history_events(history: DataFrame | None, partitions: int) -> DataFrame | None:
    """The known events when nothing new landed in the range: history alone, shaped like the clean step's output."""
    if history is None:
        return None
    d = day_index_of(F.col("ts"))
    return history.repartition(partitions, "user_id").select(*EVENT_COLUMNS, d.alias("d"), day_string(d).alias("ds"))


def cpu_clock(spark: SparkSession) -> Callable[[], float]:
    """CPU seconds (user + system) used so far by the JVM and this driver process: on a shared machine the
    wall clock also counts other people's work, CPU time much less (local mode runs everything in the JVM)."""
    try:
        import psutil
    except ImportError:  # timings only then
        return lambda: 0.0
    driver = psutil.Process()
    gateway = spark.sparkContext._jvm
    jvm: psutil.Process | None = None
    try:
        if gateway is not None:
            jvm = psutil.Process(int(gateway.java.lang.ProcessHandle.current().pid()))
    except Exception:  # no local JVM handle (Spark Connect): the driver process only
        jvm = None

    def now() -> float:
        procs = [driver] + ([jvm] if jvm is not None and jvm.pid != driver.pid else [])
        return sum(sum(p.cpu_times()[:2]) for p in procs)

    return now


def run_features(spark: SparkSession, settings: Settings, first: dt.date, last: dt.date, staging: Path,
                 incremental: bool = True) -> dict[str, Any]:
    """Compute and stage everything for [first, last]; returns the run description written to run.json.

    With a usable state of the day before ``first`` (see freshrec.spark.state) and ``incremental``, the run reads only
    the new landings, the history of the event days they touch and that state; otherwise every published clean
    event. Both give the same outputs; either way the state of ``last`` is staged with its partition.
    """
    layout = Layout(settings.home)
    days = day_range(first, last)
    run: dict[str, Any] = {"run_id": f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}",
           "days": [d.isoformat() for d in days], "code_version": st.code_version()}
    key = state_key(settings)
    state, reason = load_state(spark, layout, first, key) if incremental else (None, "full run requested")
    run["mode"] = {"incremental": state is not None, "reason": reason}
    log.info("%s run: %s", "incremental" if state is not None else "full", reason)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    timings: dict[str, float] = {}
    cpu_timings: dict[str, float] = {}
    cpu = cpu_clock(spark)
    clock, step_clock, cpu_mark = time.perf_counter(), time.perf_counter(), cpu()

    def step(name: str) -> None:  # finer than a stage, logged only (where the time of a stage goes)
        nonlocal step_clock
        now = time.perf_counter()
        log.info("  step %s: %.2fs", name, now - step_clock)
        step_clock = now

    def lap(stage: str) -> None:
        nonlocal clock, cpu_mark
        step("rest")
        now, cpu_now = time.perf_counter(), cpu()
        timings[stage], cpu_timings[stage] = round(now - clock, 3), round(cpu_now - cpu_mark, 3)
        clock, cpu_mark = now, cpu_now
        log.info("stage %s done in %.1fs (%.1f CPU s)", stage, timings[stage], cpu_timings[stage])

    files = list_raw_files(layout.raw_events, days)
    raw = read_raw(spark, files, layout.raw_events)
    rules = CleanRules(settings.data.rating_min, settings.data.rating_max, settings.data.future_ts_tolerance_s, time.time())
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions") or 200)
    events: DataFrame | None
    if raw is not None:
        classified = parse_and_classify(raw, rules)
        counts, event_days = st.rule_counts(classified)
        step("rule counts")
        result = dedup(classified, read_history(spark, layout, first, last, event_days if state else None),
                       read_known_ids(spark, layout, first, last), partitions)
        if any(entry["quarantined_rows"] for entry in counts.values()):
            st.write_partitioned(result.quarantined.withColumnRenamed("landed", "ds"), staging / "quarantine", "ds")
            step("quarantine")
        # Every later step reads this one cached, user-partitioned frame (history included, or with a state the
        # events it has not seen): no re-read of what was just written, no second shuffle of the events.
        events = result.events
        if state is not None:  # the history read for the dedup only: the state covers event days before the range
            events = events.where(F.col(LANDED).isNotNull() | (F.col("d") >= day_index(first)))
        events = events.persist(StorageLevel.MEMORY_AND_DISK)
        valid = events.where(F.col(LANDED).isNotNull())
        st.write_in_place(valid.drop("d"), staging / "clean", "ds", "landed")
        step("dedup + cache + clean write")
        st.add_valid_counts(counts, valid)
    else:
        counts = st.empty_counts()
        events = history_events(read_history(spark, layout, first, last, set() if state else None), partitions)
        events = events.persist(StorageLevel.MEMORY_AND_DISK) if events is not None else None
    if events is None:
        events = spark.createDataFrame([], EMPTY_EVENTS_SCHEMA)
    run["landed_days"] = sorted(d for d in run["days"] if (layout.raw_partition(dt.date.fromisoformat(d))).is_dir())
    lap("clean")

    user_grid = user_features(events, first, last, state.users if state else None)
    user_grid = user_grid.persist(StorageLevel.MEMORY_AND_DISK)
    item_grid = item_features(events, first, last, state.items if state else None)
    item_grid = item_grid.persist(StorageLevel.MEMORY_AND_DISK)
    items = published(item_grid, first)
    st.write_partitioned(published(user_grid, first), staging / "tables" / "users", "ds")
    step("users")
    st.write_partitioned(items, staging / "tables" / "items", "ds")
    lap("features")

    snapshot = f"snap-{run['run_id']}"
    known = events.where(F.col("d") <= day_index(last))  # as of the end of `last`, like every feature
    touch = touches(known) if state is None else merge_touches(state.touch, touches(known))
    touch = touch.persist(StorageLevel.MEMORY_AND_DISK)
    n_users = st.write_single_parquet(user_sequences(touch, settings.data.online_history_length),
                                      staging / "online" / "users.parquet", ["user_id"])
    step("snapshot users")
    n_items = st.write_single_parquet(snapshot_items(items, last), staging / "online" / "items.parquet", ["item_id"])
    earlier = published_manifests(layout, first - dt.timedelta(days=1))
    read_files = {str(p.relative_to(layout.raw_events)) for paths in files.values() for p in paths}
    read_files |= {entry["path"] for manifest in earlier.values() for entry in manifest.get("input_partitions", [])}
    (staging / "online" / WATERMARK_FILE).write_text(log_watermark(read_batch_manifests(layout), read_files, last).to_json())
    run.update(snapshot=snapshot, snapshot_rows={"users": n_users, "items": n_items}, as_of=last.isoformat())
    lap("online_snapshot")
    write_state(staging / "state", user_state(user_grid, last), item_state(item_grid, last), touch)
    step("state")  # counted with the manifests (the run's closing writes)
    spark.catalog.clearCache()  # events, tables and their daily aggregates

    for day in run["days"]:
        target = staging / "features" / f"ds={day}"
        target.mkdir(parents=True)
        for table in st.FEATURE_TABLES:
            src = staging / "tables" / table / f"ds={day}"
            if src.is_dir():
                src.rename(target / table)
        inputs = sorted(({"path": str(p.relative_to(layout.raw_events)), "bytes": p.stat().st_size}
                         for paths in files.values() for p in paths if p.relative_to(layout.raw_events).parts[0] == f"ds={day}"),
                        key=lambda entry: str(entry["path"]))
        manifest = st.build_manifest(dt.date.fromisoformat(day), counts[day], target,
                                     st.parquet_rows(staging / "clean" / f"ds={day}"), inputs, run)
        st.write_json(target / "_manifest.json", manifest)
        st.write_json(target / "_run.json", st.run_record(run))
    (staging / "state").rename(staging / "features" / f"ds={last}" / STATE_DIR)
    staged = {p.parent.name.removeprefix("ds="): json.loads(p.read_text()) for p in (staging / "features").glob("ds=*/_manifest.json")}
    write_state_meta(staging / "features" / f"ds={last}" / STATE_DIR, key, last, earlier | staged)
    shutil.rmtree(staging / "tables", ignore_errors=True)
    lap("manifests")
    run["timings_s"] = timings
    run["cpu_s"] = cpu_timings
    st.write_json(staging / RUN_FILE, run)
    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="FreshRec features job (clean, quarantine, features, snapshot)")
    parser.add_argument("--home", type=Path, default=None, help="FRESHREC_HOME (default: from settings)")
    parser.add_argument("--from", dest="first", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--to", dest="last", type=dt.date.fromisoformat, default=None)
    parser.add_argument("--staging", type=Path, default=None, help="stage only, into this directory (no publish)")
    parser.add_argument("--full", action="store_true", help="ignore the previous day's state: read all history")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    settings = load_settings(**({"home": args.home} if args.home else {}))
    last = args.last or args.first
    if last < args.first:
        raise SystemExit(f"--to {last} is before --from {args.first}")
    layout = Layout(settings.home)
    staging = args.staging or layout.lake / "_staging" / f"features-{args.first}-{last}-{uuid.uuid4().hex[:6]}"
    spark = build_session(settings, "freshrec-features")
    spark.sparkContext.setLogLevel("WARN")
    try:
        run = run_features(spark, settings, args.first, last, staging, incremental=not args.full)
    finally:
        spark.stop()
    summary = {"staging": str(staging), "run_id": run["run_id"], "days": len(run["days"]), "timings_s": run["timings_s"]}
    if args.staging is None:
        summary["snapshot_live"] = publish_run(layout, staging)["snapshot_live"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
