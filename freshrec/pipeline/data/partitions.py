"""Writing raw-event day partitions (``<root>/ds=YYYY-MM-DD/part-00000.<ext>``) safely.

Every writer stages a whole partition in a ``_``-prefixed folder beside the others (Spark and the
lake listing skip ``_``-folders) and swaps it in only when complete, so a reader never sees a half
written day and a re-run replaces a day instead of adding duplicates.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from freshrec.core.errors import InvalidInput
from freshrec.core.layout import ds_name

FileFormat = Literal["parquet", "csv", "jsonl"]
FORMATS: tuple[FileFormat, ...] = ("parquet", "csv", "jsonl")
PART_NAME = "part-00000"
ROW_GROUP_ROWS = 262_144


def check_format(fmt: str) -> FileFormat:
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown file format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


@contextmanager
def staging_dir(root: Path, purpose: str) -> Iterator[Path]:
    """A scratch folder under root (same filesystem, so renames out of it are atomic), removed afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"_{purpose}-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def replace_partition(root: Path, day: dt.date, staged: Path, trash: Path) -> Path:
    """Move a complete staged partition folder to ``root/ds=day``, replacing what was there.

    The old folder is moved aside first (into ``trash``, a staging folder the caller removes), so
    the day is never a mix of old and new files.
    """
    target = root / ds_name(day)
    if target.exists():
        trash.mkdir(parents=True, exist_ok=True)
        target.rename(trash / f"{ds_name(day)}-{uuid.uuid4().hex[:8]}")
    staged.rename(target)
    return target


def write_event_file(path: Path, tables: Iterable[pa.Table], fmt: FileFormat, schema: pa.Schema) -> int:
    """Stream tables into one file of the given format; returns the row count. Output is deterministic."""
    writer = {"parquet": _write_parquet, "csv": _write_csv, "jsonl": _write_jsonl}[fmt]
    return writer(path, tables, schema)


def _write_parquet(path: Path, tables: Iterable[pa.Table], schema: pa.Schema) -> int:
    rows, pending = 0, []
    with pq.ParquetWriter(path, schema) as writer:
        for table in tables:
            pending.append(table)
            rows += table.num_rows
            if sum(t.num_rows for t in pending) >= ROW_GROUP_ROWS:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                pending = []
        if pending or rows == 0:
            writer.write_table(pa.concat_tables(pending) if pending else schema.empty_table())
    return rows


def _write_csv(path: Path, tables: Iterable[pa.Table], schema: pa.Schema) -> int:
    rows = 0
    options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
    with pacsv.CSVWriter(path, schema, write_options=options) as writer:
        for table in tables:
            writer.write_table(table)
            rows += table.num_rows
    return rows


def _write_jsonl(path: Path, tables: Iterable[pa.Table], schema: pa.Schema) -> int:
    rows = 0
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for table in tables:
            columns = table.to_pydict()
            names = list(columns)
            for values in zip(*columns.values(), strict=True):
                fh.write(json.dumps(dict(zip(names, values, strict=True)), separators=(",", ":")))
                fh.write("\n")
            rows += table.num_rows
    return rows
