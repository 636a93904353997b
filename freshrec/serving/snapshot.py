"""The online snapshot: per-user history/seen lists and item popularity, read from the lake.

``lake/online/CURRENT`` names the live snapshot folder; it is replaced atomically by the features
plane, so reading the name and then the folder is race-free. ``bind_snapshot`` turns the id lists into
the index arrays one model version scores with (pure computation, no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from freshrec.core.errors import DataValidationError, NotFound
from freshrec.core.events import Watermark
from freshrec.core.schemas import PAD_INDEX
from freshrec.serving.ragged import Ragged

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


@dataclass(frozen=True)
class UserTable:
    """A snapshot expressed in one model's item indices, laid out for a cheap request path."""

    snapshot_name: str
    user_row: dict[str, int]
    history: Ragged  # per user: item indices, oldest first, unknown items dropped
    seen: Ragged  # per user: distinct item indices
    popular: np.ndarray  # int64 item indices, most popular first (cold start)
    popular_scores: np.ndarray  # float32 share of the interactions of ``popular`` (sums to 1)
    popularity_of: np.ndarray  # float32 [n_items + 1]: that share by item index (cold-start scores)
    watermark: Watermark

    def row(self, user_id: str) -> int | None:
        return self.user_row.get(user_id)


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
        user_row={u: r for r, u in enumerate(snapshot.user_ids)},
        history=_ragged(snapshot.histories, vocabulary).last(history_length),
        seen=_ragged(snapshot.seen, vocabulary).distinct(len(item_ids) + 1),  # distinct: top_k counts them
        popular=popular,
        popular_scores=popular_scores,
        popularity_of=popularity_of,
        watermark=snapshot.watermark,
    )
