"""The online snapshot: per-user history/seen lists and item popularity, read from the lake.

``lake/online/CURRENT`` names the live snapshot folder; it is replaced atomically by the features
plane, so reading the name and then the folder is race-free. ``bind_snapshot`` turns the id lists into
the index arrays one model version scores with (pure computation, no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from freshrec.errors import DataValidationError, NotFound
from freshrec.schemas import PAD_INDEX

CURRENT_FILE = "CURRENT"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"


@dataclass(frozen=True)
class OnlineSnapshot:
    """One snapshot as plain id lists (row i of every user list is the same user)."""

    name: str
    user_ids: list[str]
    histories: list[list[str]]
    seen: list[list[str]]
    item_ids: list[str]
    popularity: np.ndarray  # float64, aligned with item_ids

    @classmethod
    def empty(cls) -> "OnlineSnapshot":
        return cls(name="", user_ids=[], histories=[], seen=[], item_ids=[], popularity=np.zeros(0))


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
    return OnlineSnapshot(
        name=name,
        user_ids=[str(u) for u in users.column("user_id").to_pylist()],
        histories=[[str(i) for i in (h or [])] for h in users.column("history").to_pylist()],
        seen=[[str(i) for i in (s or [])] for s in users.column("seen").to_pylist()],
        item_ids=[str(i) for i in items.column("item_id").to_pylist()],
        popularity=popularity,
    )


@dataclass(frozen=True)
class UserTable:
    """A snapshot expressed in one model's item indices, laid out for a cheap request path."""

    snapshot_name: str
    user_row: dict[str, int]
    history: list[np.ndarray]  # per user: int64 item indices, oldest first, unknown items dropped
    seen: list[np.ndarray]  # per user: int64 item indices
    popular: np.ndarray  # int64 item indices, most popular first (cold start)
    popular_scores: np.ndarray  # float32 popularity of ``popular``
    popularity_of: np.ndarray  # float32 [n_items + 1]: popularity by item index (cold-start scores)

    def row(self, user_id: str) -> int | None:
        return self.user_row.get(user_id)


def bind_snapshot(snapshot: OnlineSnapshot, item_index: dict[str, int], history_length: int) -> UserTable:
    """Map a snapshot's item ids to a model's indices; items the model does not know are dropped."""

    def indices(ids: list[str]) -> np.ndarray:
        return np.fromiter((i for i in (item_index.get(x, PAD_INDEX) for x in ids) if i != PAD_INDEX), dtype=np.int64)

    histories = [indices(h[-history_length:]) for h in snapshot.histories]
    seen = [np.unique(indices(s)) for s in snapshot.seen]  # distinct: top_k counts them
    known = np.fromiter((item_index.get(x, PAD_INDEX) for x in snapshot.item_ids), dtype=np.int64, count=len(snapshot.item_ids))
    keep = known != PAD_INDEX
    order = np.argsort(-snapshot.popularity[keep], kind="stable")
    popular = known[keep][order]
    if popular.size == 0:
        # No popularity yet (first deploy): fall back to catalogue order so cold users still get a list.
        popular = np.arange(1, len(item_index) + 1, dtype=np.int64)
        popular_scores = np.zeros(popular.size, dtype=np.float32)
    else:
        popular_scores = snapshot.popularity[keep][order].astype(np.float32)
    popularity_of = np.zeros(len(item_index) + 1, dtype=np.float32)
    popularity_of[popular] = popular_scores
    return UserTable(
        snapshot_name=snapshot.name,
        user_row={u: r for r, u in enumerate(snapshot.user_ids)},
        history=histories,
        seen=seen,
        popular=popular,
        popular_scores=popular_scores,
        popularity_of=popularity_of,
    )
