"""Read landed raw partitions (CSV, JSONL, Parquet in any mix) into one all-string DataFrame.

Every column is read as a string first and parsed later by the clean step, so a bad value becomes a
quarantined row with a reason instead of a failed job. Malformed lines (wrong column count, broken
JSON) are kept whole in ``_corrupt`` thanks to Spark's PERMISSIVE mode.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from freshrec.layout import ds_name
from freshrec.schemas import RAW_COLUMNS

CORRUPT = "_corrupt"
LANDED = "landed"  # the ds folder a row was delivered in (ISO date string)
RAW_ROW = "raw_row"  # the original row, kept verbatim for the quarantine


def original_row() -> "F.Column":
    """The row as delivered: the malformed line itself, else the raw strings as JSON (built for bad rows only)."""
    return F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*[F.col(f"raw_{c}").alias(c) for c in RAW_COLUMNS])))


def list_raw_files(raw_root: Path, days: list[dt.date]) -> dict[str, list[Path]]:
    """Files per format for the given landing days; hidden and ``_`` files are skipped like Spark does."""
    by_format: dict[str, list[Path]] = defaultdict(list)
    for day in days:
        folder = raw_root / ds_name(day)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name.startswith(("_", ".")):
                continue
            suffix = path.suffix.lower()
            if suffix == ".csv":
                by_format["csv"].append(path)
            elif suffix in (".jsonl", ".json"):
                by_format["json"].append(path)
            elif suffix == ".parquet":
                by_format["parquet"].append(path)
    return by_format


def _csv_header(path: Path) -> tuple[str, ...]:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        first = fh.readline().strip().lstrip("\ufeff")
    return tuple(name.strip().strip('"') for name in first.split(","))


def _string_schema(columns: tuple[str, ...]) -> T.StructType:
    return T.StructType([T.StructField(c, T.StringType()) for c in columns] + [T.StructField(CORRUPT, T.StringType())])


def _conform(df: DataFrame, present: tuple[str, ...], has_corrupt: bool) -> DataFrame:
    """Project onto the raw contract: missing columns become null (and are quarantined later)."""
    cols = [F.col(f"`{c}`").cast("string").alias(c) if c in present else F.lit(None).cast("string").alias(c) for c in RAW_COLUMNS]
    corrupt = F.col(CORRUPT) if has_corrupt else F.lit(None).cast("string")
    landed = F.regexp_extract(F.col("_metadata.file_path"), r"ds=(\d{4}-\d{2}-\d{2})", 1)
    return df.select(*cols, corrupt.alias(CORRUPT), landed.alias(LANDED))


def read_raw(spark: SparkSession, files: dict[str, list[Path]]) -> DataFrame | None:
    """One DataFrame with RAW_COLUMNS (strings), ``_corrupt`` and ``landed``; None if no files."""
    parts: list[DataFrame] = []
    csv_groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for path in files.get("csv", []):
        csv_groups[_csv_header(path)].append(str(path))
    for header, paths in csv_groups.items():
        df = spark.read.csv(paths, header=True, schema=_string_schema(header), mode="PERMISSIVE",
                            columnNameOfCorruptRecord=CORRUPT, enforceSchema=True)
        parts.append(_conform(df, tuple(c for c in header if c in RAW_COLUMNS), has_corrupt=True))
    if files.get("json"):
        df = spark.read.json([str(p) for p in files["json"]], schema=_string_schema(RAW_COLUMNS), mode="PERMISSIVE",
                             columnNameOfCorruptRecord=CORRUPT)
        parts.append(_conform(df, RAW_COLUMNS, has_corrupt=True))
    parquet_groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for path in files.get("parquet", []):
        schema = pq.read_schema(path)
        parquet_groups[tuple(f"{f.name}:{f.type}" for f in schema)].append(str(path))
    for signature, paths in parquet_groups.items():
        present = tuple(c for c in (s.split(":", 1)[0] for s in signature) if c in RAW_COLUMNS)
        parts.append(_conform(spark.read.parquet(*paths), present, has_corrupt=False))
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out
