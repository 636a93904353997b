"""The online snapshot: per-user history/seen lists and item popularity, read from the lake.

``lake/online/CURRENT`` names the live snapshot folder; it is replaced atomically by the features
plane, so reading the name and then the folder is race-free. ``bind_snapshot`` turns the id lists into
the index arrays one model version scores with (pure computation, no I/O).

Serving does not hold a snapshot per worker: ``SharedSnapshot.bind`` writes a model's bound table once per host
(``<snapshot>/_bound/<vocabulary key>/``: plain ``.npy`` arrays and the user ids as an Arrow IPC file, written to
a temporary folder and renamed into place) and every worker memory-maps it, so the workers of a host share one
copy in the page cache and a worker's own memory does not grow with the number of users. The user lookup is a
binary search over sorted 64-bit hashes of the ids (the id itself compared on a hit), not a Python dict.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import mmap
import multiprocessing
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from freshrec.core.errors import DataValidationError, NotFound
from freshrec.core.events import Watermark
from freshrec.core.schemas import PAD_INDEX
from freshrec.serving.ragged import Ragged

log = logging.getLogger(__name__)
CURRENT_FILE = "CURRENT"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"


@dataclass(frozen=True)
class OnlineSnapshot:
    """One snapshot as Arrow columns (row i of every user column is the same user)."""

    name: str
    user_ids: list[str]
    histories: pa.Array  # list<string>, oldest first
    seen: pa.Array  # list<string>
    item_ids: pa.Array  # string, aligned with popularity
    popularity: np.ndarray  # float64
    watermark: Watermark  # the ingestion log positions these histories include

    @classmethod
    def empty(cls) -> OnlineSnapshot:
        no_lists = pa.array([], type=pa.list_(pa.string()))
        return cls("", [], no_lists, no_lists, pa.array([], type=pa.string()), np.zeros(0), Watermark())

    def bind(self, item_ids: list[str], history_length: int) -> UserTable:
        return bind_snapshot(self, item_ids, history_length)


def current_snapshot_name(online_dir: Path) -> str | None:
    """The live snapshot's name, or None when no snapshot was published yet (cheap: one small read)."""
    try:
        name = (online_dir / CURRENT_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def read_snapshot(online_dir: Path, name: str) -> OnlineSnapshot:
    folder = online_dir / name
    users_path, items_path = folder / USERS_FILE, folder / ITEMS_FILE
    if not users_path.is_file() or not items_path.is_file():
        raise NotFound(f"online snapshot {folder} lacks {USERS_FILE} or {ITEMS_FILE}")
    users = pq.read_table(users_path, columns=["user_id", "history", "seen"])
    items = pq.read_table(items_path, columns=["item_id", "popularity"])
    popularity = np.asarray(items.column("popularity").to_numpy(zero_copy_only=False), dtype=np.float64)
    if np.isnan(popularity).any():
        raise DataValidationError(f"{items_path}: popularity has nulls")
    lists = pa.list_(pa.string())
    return OnlineSnapshot(
        name=name,
        user_ids=[str(u) for u in users.column("user_id").to_pylist()],
        histories=users.column("history").cast(lists).combine_chunks(),
        seen=users.column("seen").cast(lists).combine_chunks(),
        item_ids=items.column("item_id").cast(pa.string()).combine_chunks(),
        popularity=popularity,
        watermark=Watermark.read(folder),
    )


def user_key(user_id: str) -> int:
    """A user id's 64-bit key (blake2b: the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class UserIndex:
    """user id -> snapshot row without a Python object per user: the ids' keys sorted, the row of each, and the
    ids themselves (to tell a key collision from a hit). All three can be memory-mapped."""

    keys: np.ndarray  # uint64, sorted
    rows: np.ndarray  # int64: the row of keys[i]
    ids: pa.Array  # string, by row

    @classmethod
    def build(cls, user_ids: list[str]) -> UserIndex:
        keys = np.fromiter((user_key(u) for u in user_ids), dtype=np.uint64, count=len(user_ids))
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], order.astype(np.int64), pa.array(user_ids, type=pa.string()))

    def __len__(self) -> int:
        return int(self.rows.size)

    def row(self, user_id: str) -> int | None:
        key = np.uint64(user_key(user_id))
        at = int(np.searchsorted(self.keys, key))
        while at < self.keys.size and self.keys[at] == key:
            row = int(self.rows[at])
            if self.ids[row].as_py() == user_id:
                return row
            at += 1
        return None


@dataclass(frozen=True)
class UserTable:
    """A snapshot expressed in one model's item indices, laid out for a cheap request path."""

    snapshot_name: str
    users: UserIndex
    history: Ragged  # per user: item indices, oldest first, unknown items dropped
    seen: Ragged  # per user: distinct item indices
    popular: np.ndarray  # int64 item indices, most popular first (cold start)
    popular_scores: np.ndarray  # float32 share of the interactions of ``popular`` (sums to 1)
    popularity_of: np.ndarray  # float32 [n_items + 1]: that share by item index (cold-start scores)
    watermark: Watermark

    def row(self, user_id: str) -> int | None:
        return self.users.row(user_id)


def _indices(ids: pa.Array, vocabulary: pa.Array) -> np.ndarray:
    """Model item index of every id (0 = not in the vocabulary), in Arrow's C++ hash lookup."""
    found = pc.index_in(ids, value_set=vocabulary).fill_null(-1)
    return found.to_numpy(zero_copy_only=False).astype(np.int64) + 1


def _ragged(lists: pa.Array, vocabulary: pa.Array) -> Ragged:
    counts = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = Ragged.from_counts(_indices(pc.list_flatten(lists), vocabulary), counts)
    return flat.keep(flat.values != PAD_INDEX)


def bind_snapshot(snapshot: OnlineSnapshot, item_ids: list[str], history_length: int) -> UserTable:
    """Map a snapshot's item ids to a model's indices (item i >= 1 is item_ids[i - 1]); unknown items
    are dropped. Vectorised: no per-user Python work, whatever the snapshot size."""
    vocabulary = pa.array(item_ids, type=pa.string())
    known = _indices(snapshot.item_ids, vocabulary)
    keep = known != PAD_INDEX
    order = np.argsort(-snapshot.popularity[keep], kind="stable")
    popular = known[keep][order]
    if popular.size == 0:
        # No popularity yet (first deploy): fall back to catalogue order so cold users still get a list.
        popular = np.arange(1, len(item_ids) + 1, dtype=np.int64)
        popular_scores = np.zeros(popular.size, dtype=np.float32)
    else:
        # A share of the interactions (0..1), not a raw count: cold-start scores stay on a bounded scale
        # whatever the traffic, like the model's.
        counts = snapshot.popularity[keep][order]
        popular_scores = (counts / counts.sum() if counts.sum() > 0 else counts).astype(np.float32)
    popularity_of = np.zeros(len(item_ids) + 1, dtype=np.float32)
    popularity_of[popular] = popular_scores
    return UserTable(
        snapshot_name=snapshot.name,
        users=UserIndex.build(snapshot.user_ids),
        history=_ragged(snapshot.histories, vocabulary).last(history_length),
        seen=_ragged(snapshot.seen, vocabulary).distinct(len(item_ids) + 1),  # distinct: top_k counts them
        popular=popular,
        popular_scores=popular_scores,
        popularity_of=popularity_of,
        watermark=snapshot.watermark,
    )


BOUND_DIR = "_bound"
BOUND_FORMAT = 2
_ARRAYS = ("keys", "rows", "history_values", "history_offsets", "seen_values", "seen_offsets", "popular",
           "popular_scores", "popularity_of")
_IDS_FILE, _META_FILE = "user_ids.arrow", "meta.json"


@dataclass(frozen=True)
class SharedSnapshot:
    """The live snapshot as serving holds it: its name, folder and watermark; the user lists stay on disk until a
    model binds them (``bind``), and then live in files every worker of the host maps (see the module doc)."""

    name: str
    folder: Path
    watermark: Watermark

    def bind(self, item_ids: list[str], history_length: int) -> UserTable:
        return shared_user_table(self.folder, item_ids, history_length)


class BindableSnapshot(Protocol):
    """What serving binds a model to: an in-memory ``OnlineSnapshot`` or the host-shared ``SharedSnapshot``."""

    @property
    def name(self) -> str: ...

    @property
    def watermark(self) -> Watermark: ...

    def bind(self, item_ids: list[str], history_length: int) -> UserTable: ...


def open_snapshot(online_dir: Path, name: str) -> SharedSnapshot:
    """The snapshot ``name`` without reading its user lists (they are read once per host and model, by ``bind``)."""
    folder = online_dir / name
    if not (folder / USERS_FILE).is_file() or not (folder / ITEMS_FILE).is_file():
        raise NotFound(f"online snapshot {folder} lacks {USERS_FILE} or {ITEMS_FILE}")
    for path, columns in ((folder / USERS_FILE, {"user_id", "history", "seen"}), (folder / ITEMS_FILE, {"item_id", "popularity"})):
        missing = columns - set(pq.read_schema(path).names)  # a file that is not Parquet fails here, before any bind
        if missing:
            raise DataValidationError(f"{path} lacks the columns {sorted(missing)}")
    return SharedSnapshot(name, folder, Watermark.read(folder))


def bound_key(item_ids: list[str], history_length: int) -> str:
    """What a bound table depends on besides the snapshot: the model's vocabulary, the history length, the format."""
    digest = hashlib.sha256(json.dumps([BOUND_FORMAT, history_length, item_ids]).encode())
    return digest.hexdigest()[:20]


def shared_user_table(folder: Path, item_ids: list[str], history_length: int) -> UserTable:
    """The snapshot in ``folder`` bound to ``item_ids``, memory-mapped from ``folder/_bound/<key>/``; the first
    worker to need it builds it (another may build the same one at the same time: the first rename wins)."""
    target = folder / BOUND_DIR / bound_key(item_ids, history_length)
    if not (target / _META_FILE).is_file():
        try:
            target.parent.mkdir(exist_ok=True)
            # One builder per host: the workers starting together wait for it instead of each reading the snapshot.
            with (target.parent / f".{target.name}.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (target / _META_FILE).is_file():
                    _build_apart(folder, target, item_ids, history_length)
        except PermissionError as exc:  # a read-only lake: this worker keeps its own copy, as before
            log.warning("cannot share the bound snapshot under %s (%s): binding it in this worker's memory", target, exc)
            return bind_snapshot(read_snapshot(folder.parent, folder.name), item_ids, history_length)
    return _read_bound(target, folder.name)


def _build_apart(folder: Path, target: Path, item_ids: list[str], history_length: int) -> None:
    """``_write_bound`` in a fresh interpreter: reading a snapshot takes several times its bound size in transient
    memory (Arrow lists, the id strings), which a serving worker's allocators would keep after the build."""
    context = multiprocessing.get_context("spawn")  # never fork a process that runs threads and an event loop
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            pool.submit(_write_bound, folder, target, item_ids, history_length).result()
    except BrokenProcessPool as exc:  # killed (out of memory, say): the snapshot is not served, like an unreadable one
        raise DataValidationError(f"binding the snapshot {folder} failed: its builder process died ({exc})") from None


def _write_bound(folder: Path, target: Path, item_ids: list[str], history_length: int) -> None:
    table = bind_snapshot(read_snapshot(folder.parent, folder.name), item_ids, history_length)
    staging = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        # item indices as int32 when the catalogue allows: the values are nearly all of the table's size
        narrow = np.int32 if len(item_ids) < np.iinfo(np.int32).max else np.int64
        arrays = {"keys": table.users.keys, "rows": table.users.rows,
                  "history_values": table.history.values.astype(narrow), "history_offsets": table.history.offsets,
                  "seen_values": table.seen.values.astype(narrow), "seen_offsets": table.seen.offsets, "popular": table.popular,
                  "popular_scores": table.popular_scores, "popularity_of": table.popularity_of}
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        ids = pa.table({"user_id": table.users.ids})
        with pa.OSFile(str(staging / _IDS_FILE), "wb") as sink, ipc.new_file(sink, ids.schema) as writer:
            writer.write_table(ids)
        # written last: a folder with meta.json is complete
        (staging / _META_FILE).write_text(json.dumps({"format": BOUND_FORMAT, "users": len(table.users),
                                                      "items": len(item_ids), "history_length": history_length}))
        try:
            staging.rename(target)
        except OSError:  # another worker renamed its identical table into place first
            if not (target / _META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+; Python 3.11's mmap lacks the name


def _mapped(path: Path, populate: bool) -> np.ndarray:
    """A read-only map of an .npy file, as a plain ndarray view (np.memmap's subclass hooks would cost every
    per-request slice). With ``populate`` its page tables are filled now, from the page cache every worker of the
    host shares: without it a request for a user nobody asked for yet faults the pages of their rows in (about 15 us
    per user here). The pages stay shared and clean: the kernel can drop them, and the workers map one copy."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    raw = getattr(array, "_mmap", None)
    if populate and raw is not None:
        try:
            raw.madvise(MADV_POPULATE_READ)
        except OSError:  # an older kernel: pages are faulted in on first use instead
            pass
    return np.asarray(array)


def _fits_in_memory(folder: Path) -> bool:
    """Whether the bound table takes at most half the memory the host has available (else it is paged on demand)."""
    size = sum(p.stat().st_size for p in folder.iterdir() if p.suffix == ".npy")
    return size <= psutil.virtual_memory().available // 2


def _read_bound(target: Path, snapshot_name: str) -> UserTable:
    try:
        meta = json.loads((target / _META_FILE).read_text())
        if meta.get("format") != BOUND_FORMAT:
            raise DataValidationError(f"{target}: bound table format {meta.get('format')}, expected {BOUND_FORMAT}")
        populate = _fits_in_memory(target)
        arrays = {name: _mapped(target / f"{name}.npy", populate) for name in _ARRAYS}
        column = ipc.open_file(pa.memory_map(str(target / _IDS_FILE), "r")).read_all().column("user_id")
        ids = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise DataValidationError(f"{target}: unreadable bound snapshot table ({exc})") from exc
    if not (len(ids) == arrays["keys"].size == arrays["rows"].size == arrays["history_offsets"].size - 1
            == arrays["seen_offsets"].size - 1 == meta.get("users")):
        raise DataValidationError(f"{target}: bound snapshot table with inconsistent sizes")
    return UserTable(
        snapshot_name=snapshot_name,
        users=UserIndex(arrays["keys"], arrays["rows"], ids),
        history=Ragged(arrays["history_values"], arrays["history_offsets"]),
        seen=Ragged(arrays["seen_values"], arrays["seen_offsets"]),
        popular=arrays["popular"],
        popular_scores=arrays["popular_scores"],
        popularity_of=arrays["popularity_of"],
        watermark=Watermark.read(target.parent.parent),
    )
