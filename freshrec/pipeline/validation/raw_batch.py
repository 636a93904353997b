"""Load a raw batch (the landed files of some days) as strings, without Spark, for the raw suite.

Only the reading is done here; what is valid is decided by the expectations (raw_suite) and, row by
row, by the Spark clean job. Malformed lines are kept with ``malformed=True`` so the suite sees them.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from freshrec.core.layout import ds_name
from freshrec.core.schemas import RAW_COLUMNS

BATCH_COLUMNS = (*RAW_COLUMNS, "landed", "malformed")


def _csv_rows(path: Path) -> list[dict]:
    rows: list[dict[str, object]] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
        for fields in reader:
            if len(fields) != len(header):
                rows.append({"malformed": True})
            else:
                rows.append(dict(zip(header, fields)))
    return rows


def _jsonl_rows(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            rows.append({k: None if v is None else str(v) for k, v in record.items()} if isinstance(record, dict) else {"malformed": True})
    return rows


def _parquet_rows(path: Path) -> pd.DataFrame:
    table = pq.read_table(path)
    present = [c for c in RAW_COLUMNS if c in table.column_names]
    frame = table.select(present).to_pandas()
    return frame.astype("string").astype(object).where(frame.notna(), None)


def load_raw_batch(raw_root: Path, days: list[dt.date]) -> pd.DataFrame:
    """Every landed row of ``days`` with RAW_COLUMNS as strings (None when missing) plus landed/malformed."""
    frames = []
    for day in days:
        folder = raw_root / ds_name(day)
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))):
            suffix = path.suffix.lower()
            if suffix == ".parquet":
                frame = _parquet_rows(path)
            elif suffix == ".csv":
                frame = pd.DataFrame.from_records(_csv_rows(path))
            elif suffix in (".jsonl", ".json"):
                frame = pd.DataFrame.from_records(_jsonl_rows(path))
            else:
                continue
            frame["landed"] = day.isoformat()
            frames.append(frame)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in BATCH_COLUMNS})
    batch = pd.concat(frames, ignore_index=True)
    for column in BATCH_COLUMNS:
        if column not in batch.columns:
            batch[column] = None
    batch["malformed"] = batch["malformed"].map(lambda v: v is True)
    return batch[list(BATCH_COLUMNS)]
