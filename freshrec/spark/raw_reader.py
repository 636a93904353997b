"""Read landed raw partitions (CSV, JSONL, Parquet in any mix) into one all-string DataFrame.

Every column is read as a string first and parsed later by the clean step, so a bad value becomes a
quarantined row with a reason instead of a failed job. Malformed lines (wrong column count, broken
JSON) are kept whole in ``_corrupt`` thanks to Spark's PERMISSIVE mode. Besides the raw contract's columns a
row may carry an ``event_id`` (the ingestion log's files do; other deliveries may): null where absent.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from freshrec.core.layout import ds_name
from freshrec.core.schemas import RAW_COLUMNS

CORRUPT = "_corrupt"
LANDED = "landed"  # the ds folder a row was delivered in (ISO date string)
RAW_ROW = "raw_row"  # the original row, kept verbatim for the quarantine
VALUE_NUM = "_value_num"  # the value when the source already typed it as a number (Parquet), else null
PARTITION = "ds"  # the landing folder's partition column, as Spark discovers it under the raw root
EVENT_ID = "event_id"
COLUMNS = (*RAW_COLUMNS, EVENT_ID)  # what a raw row is read as (every one a string)


def original_row() -> F.Column:
    """The row as delivered: the malformed line itself, else the raw strings as JSON (built for bad rows only)."""
    return F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*[F.col(f"raw_{c}").alias(c) for c in COLUMNS])))


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


def _conform(df: DataFrame, present: tuple[str, ...], has_corrupt: bool, partitioned: bool, numeric_value: bool = False) -> DataFrame:
    """Project onto the raw contract: missing columns become null (and are quarantined later)."""
    cols = [F.col(f"`{c}`").cast("string").alias(c) if c in present else F.lit(None).cast("string").alias(c) for c in COLUMNS]
    corrupt = F.col(CORRUPT) if has_corrupt else F.lit(None).cast("string")
    # The landing day: Spark's partition column when every file sits directly in its ds= folder (a constant
    # per file, free), else parsed from each row's file path.
    landed = F.col(PARTITION) if partitioned else F.regexp_extract(F.col("_metadata.file_path"), r"ds=(\d{4}-\d{2}-\d{2})", 1)
    # A number the source already typed is used as is (no double -> string -> double round trip per row).
    value_num = F.col("value").cast("double") if numeric_value else F.lit(None).cast("double")
    return df.select(*cols, corrupt.alias(CORRUPT), landed.alias(LANDED), value_num.alias(VALUE_NUM))


def _directly_in_partitions(raw_root: Path | None, files: dict[str, list[Path]]) -> bool:
    if raw_root is None:
        return False
    return all(p.parent.parent == raw_root and p.parent.name.startswith("ds=") for paths in files.values() for p in paths)


def read_raw(spark: SparkSession, files: dict[str, list[Path]], raw_root: Path | None = None) -> DataFrame | None:
    """One DataFrame with COLUMNS (strings), ``_corrupt``, ``landed`` and ``_value_num``; None if no files."""
    parts: list[DataFrame] = []
    partitioned = _directly_in_partitions(raw_root, files)

    def reader():  # a fresh one per read: a DataFrameReader keeps the schema it was given
        return spark.read.option("basePath", str(raw_root)) if partitioned else spark.read

    csv_groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for path in files.get("csv", []):
        csv_groups[_csv_header(path)].append(str(path))
    for header, paths in csv_groups.items():
        df = reader().csv(paths, header=True, schema=_string_schema(header), mode="PERMISSIVE",
                          columnNameOfCorruptRecord=CORRUPT, enforceSchema=True)
        parts.append(_conform(df, tuple(c for c in header if c in COLUMNS), has_corrupt=True, partitioned=partitioned))
    if files.get("json"):
        df = reader().json([str(p) for p in files["json"]], schema=_string_schema(COLUMNS), mode="PERMISSIVE",
                           columnNameOfCorruptRecord=CORRUPT)
        parts.append(_conform(df, COLUMNS, has_corrupt=True, partitioned=partitioned))
    parquet_groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    numeric: dict[tuple[str, ...], bool] = {}
    for path in files.get("parquet", []):
        schema = pq.read_schema(path)
        signature = tuple(f"{f.name}:{f.type}" for f in schema)
        parquet_groups[signature].append(str(path))
        value_type = schema.field("value").type if "value" in schema.names else None
        numeric[signature] = value_type is not None and (pa.types.is_floating(value_type) or pa.types.is_integer(value_type))
    for signature, paths in parquet_groups.items():
        present = tuple(c for c in (s.split(":", 1)[0] for s in signature) if c in COLUMNS)
        parts.append(_conform(reader().parquet(*paths), present, has_corrupt=False, partitioned=partitioned,
                              numeric_value=numeric[signature]))
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out
