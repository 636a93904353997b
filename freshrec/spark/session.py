"""One place that builds the SparkSession every FreshRec job uses."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from freshrec.core.settings import Settings


def launched_by_spark_submit() -> bool:
    """spark-submit starts the Python driver from a JVM that already carries the master and memory."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(settings: Settings, app_name: str, shuffle_partitions: int | None = None) -> SparkSession:
    """A session tuned for FreshRec's data sizes (UTC everywhere, few shuffle partitions on small boxes)."""
    builder = SparkSession.builder.appName(app_name)
    if not launched_by_spark_submit():
        builder = builder.master(settings.spark_master).config("spark.driver.memory", settings.spark_driver_memory)
    # Executors must run the same interpreter as the driver (the venv), or imports of the core fail.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    partitions = shuffle_partitions or max(4, 2 * (os.cpu_count() or 2))
    return (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # The features job shuffles its events once, by user; joins on (user_id, day) of frames derived from
        # them keep that partitioning instead of shuffling again by both keys.
        .config("spark.sql.requireAllClusterKeysForCoPartition", "false")
        .config("spark.sql.parquet.compression.codec", "zstd")
        # ds=YYYY-MM-DD partitions stay strings (dates would break the string comparisons).
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .config("spark.driver.extraJavaOptions", "-Dlog4j2.level=WARN")
        .getOrCreate()
    )
