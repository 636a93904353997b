"""Writing a run's outputs into its staging directory, and the per-day accounting (manifests)."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from freshrec.spark.clean import day_index

FEATURE_TABLES = ("users", "items")


def write_partitioned(df: DataFrame, path: Path, *partition_cols: str) -> None:
    """One file per partition, for the small per-key tables (a day of users or items fits one writer)."""
    df.repartition(*partition_cols).write.mode("overwrite").partitionBy(*partition_cols).parquet(str(path))


def write_in_place(df: DataFrame, path: Path, *partition_cols: str) -> None:
    """Event-sized tables: each task writes its own rows into the partitions it holds (no shuffle of the
    whole table just to have one file per day; a day gets one file per task, a few large files)."""
    df.write.mode("overwrite").partitionBy(*partition_cols).parquet(str(path))


def write_single_parquet(df: DataFrame, path: Path, sort_by: list[str]) -> int:
    """Collect a small table through Arrow and write one Parquet file (what the server memory-maps); sorted
    here rather than by Spark (a global sort is a sampling job plus a shuffle, for a table that fits the driver)."""
    table = df.toArrow()
    table = table.sort_by([(c, "ascending") for c in sort_by])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return table.num_rows


def parquet_rows(folder: Path) -> int:
    """Row count from Parquet footers only (no data read)."""
    if not folder.is_dir():
        return 0
    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.rglob("*.parquet"))


def code_version() -> str:
    """Package version plus a digest of this job's sources: it changes exactly when the job's code does
    (a git sha would change with every unrelated commit and break rerun-identical manifests)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    try:
        package = importlib.metadata.version("freshrec")
    except importlib.metadata.PackageNotFoundError:
        package = "0+unknown"
    return f"freshrec-{package}+jobs.{digest.hexdigest()[:12]}"


def git_revision() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def empty_counts() -> dict[str, dict]:
    return defaultdict(lambda: {"input_rows": 0, "passed_rows": 0, "valid_rows": 0, "quarantined_rows": 0,
                                "duplicate_rows": 0, "late_rows": 0, "quarantine_reasons": {}})


def rule_counts(classified: DataFrame) -> tuple[dict[str, dict], set[int]]:
    """Per landing day: input rows, quarantined rows by reason, rows that passed the rules; and the event days
    (day index) of the rows that passed (one small collect)."""
    counts = empty_counts()
    event_days: set[int] = set()
    passed_day = F.when(F.col("reason").isNull(), day_index(F.col("ts"))).alias("d")
    for row in classified.groupBy("landed", "reason", passed_day).count().collect():
        if row["d"] is not None:
            event_days.add(row["d"])
        entry = counts[row["landed"]]
        entry["input_rows"] += row["count"]
        if row["reason"] is None:
            entry["passed_rows"] += row["count"]
        else:
            entry["quarantined_rows"] += row["count"]
            entry["quarantine_reasons"][row["reason"]] = row["count"]
    return counts, event_days


def add_valid_counts(counts: dict[str, dict], valid: DataFrame) -> dict[str, dict]:
    """Valid and late rows per landing day; duplicates are the rows that passed the rules but were not kept
    (passed - valid), so input = valid + quarantined + duplicates holds by construction."""
    late = F.sum(F.when(F.col("ds") < F.col("landed"), 1).otherwise(0))
    for row in valid.groupBy("landed").agg(F.count(F.lit(1)).alias("valid"), late.alias("late")).collect():
        entry = counts[row["landed"]]
        entry["valid_rows"], entry["late_rows"] = row["valid"], row["late"]
    for entry in counts.values():
        entry["duplicate_rows"] = entry["passed_rows"] - entry["valid_rows"]
    return counts


def build_manifest(day: dt.date, counts: dict, staged_day: Path, clean_rows: int, input_files: list[dict],
                   run: dict) -> dict:
    outputs = {table: parquet_rows(staged_day / table) for table in FEATURE_TABLES}
    outputs["clean_events"] = clean_rows
    return {
        "ds": day.isoformat(),
        "input_rows": counts["input_rows"],
        "valid_rows": counts["valid_rows"],
        "quarantined_rows": counts["quarantined_rows"],
        "duplicate_rows": counts["duplicate_rows"],
        "late_rows": counts["late_rows"],
        "quarantine_reasons": dict(sorted(counts["quarantine_reasons"].items())),
        "outputs": outputs,
        "input_partitions": input_files,
        "code_version": run["code_version"],
    }


def run_record(run: dict) -> dict:
    """Which run produced a partition; kept out of the manifest so a rerun reproduces the manifest exactly."""
    return {"run_id": run["run_id"], "run_range": [run["days"][0], run["days"][-1]], "code_version": run["code_version"],
            "git_revision": git_revision()}


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
