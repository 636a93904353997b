"""MovieLens ratings -> raw ``rating`` events, one ``ds=`` partition per event day (UTC).

Reads ML-100K ``u.data`` (tab, no header), RecBole ``*.inter`` (tab, typed header), ML-1M/10M
``ratings.dat`` (``::``) and ML-20M/25M ``ratings.csv`` (header ``userId,movieId,rating,timestamp``).
The format is detected from the file's first line, whatever the file is called.

Large files (ML-25M: 25M rows) are streamed in blocks: pass 1 spreads each block over per-year bucket
files, pass 2 sorts one year at a time by timestamp and cuts it into days. Everything is staged under
the output folder and each day's partition is swapped in only after the whole file parsed, so a
malformed file changes nothing and a re-import replaces days instead of duplicating them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from freshrec.core.errors import InvalidInput, NotFound
from freshrec.core.layout import ds_name
from freshrec.pipeline.data.movielens_meta import write_metadata
from freshrec.pipeline.data.partitions import PART_NAME, replace_partition, staging_dir

RatingsFormat = Literal["udata", "recbole", "dat", "csv"]
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
IMPORT_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("item_id", pa.string()), ("event_type", pa.string()), ("value", pa.float64()), ("ts", pa.int64())]
)
_TYPES = {"user_id": pa.string(), "item_id": pa.string(), "rating": pa.float64(), "timestamp": pa.float64()}
_CSV_NAMES = {"userid": "user_id", "movieid": "item_id", "itemid": "item_id", "rating": "rating", "timestamp": "timestamp"}
_BLOCK_BYTES = 32 << 20
_DAY_S = 86_400
_EXPECTED = (
    "u.data (tab, no header), RecBole *.inter (tab, header user_id:token item_id:token rating:float "
    "timestamp:float), ratings.dat (UserID::MovieID::Rating::Timestamp) or ratings.csv "
    "(header userId,movieId,rating,timestamp)"
)


@dataclass(frozen=True)
class RatingsFile:
    """A ratings file and how to parse it."""

    path: Path
    fmt: RatingsFormat
    column_names: tuple[str, ...]   # every column of the file, standard names where known
    header: str | None              # the original header line (RecBole, CSV); None when the file has none


@dataclass
class ImportSummary:
    source: Path
    fmt: RatingsFormat
    out: Path
    rows: int
    users: int
    items: int
    days: int
    first_day: dt.date | None
    last_day: dt.date | None
    metadata: list[Path] = field(default_factory=list)


def find_ratings_file(path: Path) -> Path:
    """The ratings file itself, or the one inside an extracted MovieLens / RecBole folder."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise NotFound(f"ratings file {path} does not exist")
    found = [p for name in ("u.data", "ratings.dat", "ratings.csv") if (p := path / name).is_file()]
    found += sorted(path.glob("*.inter"))
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none of u.data, ratings.dat, ratings.csv, *.inter"
        raise InvalidInput(f"{path} is a folder; name the ratings file to import ({listed})")
    return found[0]


def detect_format(path: Path) -> RatingsFile:
    """Recognise the ratings format from the first line; InvalidInput for anything else."""
    path = find_ratings_file(path)
    with open(path, "rb") as fh:
        first = fh.readline(65_536).decode("utf-8", errors="replace").rstrip("\r\n")
    if not first.strip():
        raise InvalidInput(f"{path} is empty or starts with a blank line; expected {_EXPECTED}")
    if "::" in first:
        if len(first.split("::")) != 4:
            raise InvalidInput(f"{path}: '::' file with {len(first.split('::'))} fields is not a ratings.dat (4 fields)")
        return RatingsFile(path, "dat", ("user_id", "_1", "item_id", "_2", "rating", "_3", "timestamp"), None)
    tab_fields = first.split("\t")
    if len(tab_fields) > 1 and all(":" in f for f in tab_fields):
        names = tuple(f.split(":", 1)[0].strip() for f in tab_fields)
        missing = [c for c in RATING_COLUMNS if c not in names]
        if missing:
            raise InvalidInput(f"{path}: RecBole header lacks {', '.join(missing)} (header: {first!r})")
        return RatingsFile(path, "recbole", names, first)
    csv_fields = [f.strip().strip('"').lower() for f in first.split(",")]
    if len(csv_fields) >= 4 and csv_fields[:2] in (["userid", "movieid"], ["userid", "itemid"]):
        names = tuple(_CSV_NAMES.get(f, f"_{i}") for i, f in enumerate(csv_fields))
        missing = [c for c in RATING_COLUMNS if c not in names]
        if missing:
            raise InvalidInput(f"{path}: ratings.csv header lacks {', '.join(missing)} (header: {first!r})")
        return RatingsFile(path, "csv", names, first)
    if len(tab_fields) == 4 and all(_is_number(f) for f in tab_fields):
        return RatingsFile(path, "udata", RATING_COLUMNS, None)
    raise InvalidInput(f"{path}: unrecognised ratings format (first line {first[:120]!r}); expected {_EXPECTED}")


def iter_ratings(ratings: RatingsFile, block_bytes: int = _BLOCK_BYTES) -> Iterator[pa.Table]:
    """Blocks of (user_id str, item_id str, rating float64, timestamp int64), in file order."""
    delimiter = {"udata": "\t", "recbole": "\t", "dat": ":", "csv": ","}[ratings.fmt]
    read_options = pacsv.ReadOptions(
        column_names=list(ratings.column_names), skip_rows=0 if ratings.header is None else 1, block_size=block_bytes
    )
    convert_options = pacsv.ConvertOptions(column_types=_TYPES, include_columns=list(RATING_COLUMNS))
    parse_options = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if ratings.fmt == "csv" else False)
    try:
        reader = pacsv.open_csv(
            ratings.path, read_options=read_options, parse_options=parse_options, convert_options=convert_options
        )
        for batch in reader:
            yield _checked(pa.Table.from_batches([batch]), ratings)
    except pa.ArrowInvalid as exc:
        raise InvalidInput(f"{ratings.path}: malformed {ratings.fmt} ratings file: {exc}") from None


def read_ratings(path: Path) -> tuple[RatingsFile, pd.DataFrame]:
    """The whole file as a DataFrame (user_id, item_id, rating, timestamp) in file order; for small sets."""
    ratings = detect_format(path)
    tables = list(iter_ratings(ratings))
    empty = pa.schema([(c, pa.int64() if c == "timestamp" else _TYPES[c]) for c in RATING_COLUMNS]).empty_table()
    table = pa.concat_tables(tables) if tables else empty
    return ratings, table.to_pandas()


def write_ratings(frame: pd.DataFrame, path: Path, like: RatingsFile) -> Path:
    """Write (user_id, item_id, rating, timestamp) rows in the format of ``like`` (so they re-import)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [frame["user_id"].astype(str), frame["item_id"].astype(str)]
    columns += [_number_text(frame["rating"]), _number_text(frame["timestamp"])]
    sep = {"udata": "\t", "recbole": "\t", "dat": "::", "csv": ","}[like.fmt]
    header = {
        "udata": None,
        "dat": None,
        "recbole": "user_id:token\titem_id:token\trating:float\ttimestamp:float",
        "csv": "userId,movieId,rating,timestamp",
    }[like.fmt]
    lines = columns[0].str.cat(columns[1:], sep=sep) if len(frame) else pd.Series([], dtype=str)
    partial = path.with_name(f".{path.name}.tmp")
    with open(partial, "w", encoding="utf-8", newline="\n") as fh:
        if header:
            fh.write(header + "\n")
        fh.writelines(line + "\n" for line in lines)
    partial.replace(path)
    return path


def import_movielens(path: Path, out: Path) -> ImportSummary:
    """Import a ratings file (and sibling metadata) into ``out``; see the module doc."""
    ratings = detect_format(path)
    out = Path(out)
    users: set[str] = set()
    items: set[str] = set()
    rows = 0
    with staging_dir(out, "import") as staging:
        by_year = staging / "by_year"
        for block_no, block in enumerate(iter_ratings(ratings)):
            rows += block.num_rows
            users.update(pc.unique(block["user_id"]).to_pylist())
            items.update(pc.unique(block["item_id"]).to_pylist())
            _bucket_by_year(_to_events(block), by_year, block_no)
        days = _cut_into_days(by_year, staging / "days")
        for day in days:
            replace_partition(out, day, staging / "days" / ds_name(day), staging / "trash")
        metadata = write_metadata(ratings, out / "_meta")
    return ImportSummary(
        source=ratings.path, fmt=ratings.fmt, out=out, rows=rows, users=len(users), items=len(items), days=len(days),
        first_day=days[0] if days else None, last_day=days[-1] if days else None, metadata=metadata,
    )


def _checked(table: pa.Table, ratings: RatingsFile) -> pa.Table:
    for column in RATING_COLUMNS:
        if table[column].null_count:
            raise InvalidInput(f"{ratings.path}: empty or missing {column} value in {table[column].null_count} row(s)")
    for column in ("user_id", "item_id"):
        if pc.any(pc.equal(pc.utf8_length(table[column]), 0)).as_py():
            raise InvalidInput(f"{ratings.path}: empty {column} in some row(s)")
    timestamp = pc.cast(pc.floor(table["timestamp"]), pa.int64())
    return table.set_column(table.schema.get_field_index("timestamp"), "timestamp", timestamp)


def _to_events(block: pa.Table) -> pa.Table:
    return pa.table(
        [block["user_id"], block["item_id"], pa.repeat(pa.scalar("rating"), block.num_rows).cast(pa.string()),
         block["rating"], block["timestamp"]],
        schema=IMPORT_SCHEMA,
    )


def _bucket_by_year(events: pa.Table, root: Path, block_no: int) -> None:
    """Spread one block over per-year files, so pass 2 holds one year (not the whole file) in memory."""
    years = pc.year(pc.cast(events["ts"], pa.timestamp("s", tz="UTC"))).to_numpy()
    for year in np.unique(years):
        folder = root / f"y={year:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(events.filter(pa.array(years == year)), folder / f"block-{block_no:06d}.parquet")


def _cut_into_days(by_year: Path, days_root: Path) -> list[dt.date]:
    """Sort each year by timestamp (stable: ties keep file order) and write one partition per UTC day."""
    days: list[dt.date] = []
    if not by_year.is_dir():
        return days
    for year_dir in sorted(by_year.iterdir()):
        year = pa.concat_tables(pq.read_table(f) for f in sorted(year_dir.iterdir()))
        year = year.take(pc.sort_indices(year, sort_keys=[("ts", "ascending")]))
        day_numbers = year["ts"].to_numpy() // _DAY_S
        cuts = np.flatnonzero(np.diff(day_numbers)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(day_numbers)], strict=True):
            day = dt.date(1970, 1, 1) + dt.timedelta(days=int(day_numbers[lo]))
            folder = days_root / ds_name(day)
            folder.mkdir(parents=True)
            pq.write_table(year.slice(lo, hi - lo), folder / f"{PART_NAME}.parquet")
            days.append(day)
    return days


def _number_text(values: pd.Series) -> pd.Series:
    """Numbers as MovieLens writes them: integers without a decimal point (3, 881250949), others as is (3.5)."""
    v = values.to_numpy(dtype=np.float64)
    integral = np.isfinite(v) & (v == np.floor(v))
    text = np.where(integral, np.where(integral, v, 0).astype(np.int64).astype(str), v.astype(str))
    return pd.Series(text, index=values.index)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
