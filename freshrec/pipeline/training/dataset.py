"""Training data: clean events from the lake -> interactions -> vocabulary -> per-user item sets.

Every interaction counts as relevant (implicit feedback, no rating threshold), matching the MS
Recommenders protocol. A user's history is the list of distinct items ordered by each item's *last*
interaction (ties by item id): the order of the online snapshot (``freshrec.spark.online_snapshot``) and of
the live tail merged at request time (``freshrec.serving.live.merge_live``), so a model trains on the order it
is served with (tests/training/test_history_parity.py runs the Spark job and this builder on one lake).
Reading the lake (I/O) lives in ``read_clean_events``; everything else is pure computation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from freshrec.core.errors import DataValidationError, NotFound
from freshrec.core.schemas import EVENT_WEIGHTS, PAD_INDEX

INTERACTION_COLUMNS = ["user_id", "item_id", "ts"]
SIGNAL_COLUMNS = ["event_type", "value"]  # kept when present: how strong each interaction was


def read_clean_events(clean_root: Path, days: list | None = None) -> pd.DataFrame:
    """Read ``lake/clean/events/ds=D/`` Parquet into a frame with user_id, item_id (str), ts (UTC), event_type, value."""
    if not clean_root.is_dir():
        raise NotFound(f"no clean events under {clean_root}; run the features stage first")
    parts = sorted(p for p in clean_root.iterdir() if p.is_dir() and p.name.startswith("ds="))
    if days is not None:
        wanted = {f"ds={d}" for d in days}
        parts = [p for p in parts if p.name in wanted]
    files = [f for p in parts for f in sorted(p.rglob("*.parquet"))]
    if not files:
        raise NotFound(f"no clean event Parquet files under {clean_root}")
    table = pads.dataset([str(f) for f in files], format="parquet").to_table(columns=INTERACTION_COLUMNS + SIGNAL_COLUMNS)
    return normalise_interactions(table.to_pandas())


def normalise_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce ids to str and ts to UTC timestamps; drop rows with missing fields. ``event_type`` and ``value``
    are kept when the frame has both (the lake's clean events do; a bare ratings file need not)."""
    missing = [c for c in INTERACTION_COLUMNS if c not in frame.columns]
    if missing:
        raise DataValidationError(f"interactions lack columns {missing}")
    columns = INTERACTION_COLUMNS + (SIGNAL_COLUMNS if set(SIGNAL_COLUMNS) <= set(frame.columns) else [])
    out = frame[columns].dropna().copy()
    out["user_id"] = out["user_id"].astype(str)
    out["item_id"] = out["item_id"].astype(str)
    if pd.api.types.is_numeric_dtype(out["ts"]):
        out["ts"] = pd.to_datetime(out["ts"], unit="s", utc=True)
    else:
        out["ts"] = pd.to_datetime(out["ts"], utc=True)
    if out.empty:
        raise DataValidationError("no interactions to train on")
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class Vocab:
    """Stable id <-> index maps. Item index i >= 1 is items[i-1]; 0 is padding."""

    items: list[str]
    users: list[str]

    @property
    def n_items(self) -> int:
        return len(self.items)

    def item_index(self) -> dict[str, int]:
        return {item: i + 1 for i, item in enumerate(self.items)}

    def to_json(self) -> dict:
        return {"items": self.items, "users": self.users}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> Vocab:
        data = json.loads(path.read_text())
        return cls(items=list(data["items"]), users=list(data["users"]))


def build_vocab(interactions: pd.DataFrame, parent: Vocab | None = None) -> Vocab:
    """Vocabulary for ``interactions``; with a parent, its ids keep their indices and new ids are appended.

    New ids are appended in first-seen order (ties by id), so the same data always gives the same vocab.
    """
    ordered = interactions.sort_values(["ts", "user_id", "item_id"], kind="stable")
    items = list(parent.items) if parent else []
    users = list(parent.users) if parent else []
    known_items, known_users = set(items), set(users)
    items += [i for i in pd.unique(ordered["item_id"]) if i not in known_items]
    users += [u for u in pd.unique(ordered["user_id"]) if u not in known_users]
    return Vocab(items=items, users=users)


def user_histories(interactions: pd.DataFrame, vocab: Vocab) -> dict[str, np.ndarray]:
    """user_id -> distinct item indices in last-interaction order (oldest first)."""
    return timed_histories(interactions, vocab)[0]


def event_strength(interactions: pd.DataFrame) -> pd.Series:
    """How strong each event is: a rating's stars, else the weight of its type (``EVENT_WEIGHTS``; 1 when unknown)."""
    kind = interactions["event_type"].astype(str)
    typed = kind.map(EVENT_WEIGHTS).fillna(1.0).astype(np.float64)
    return typed.where(kind != "rating", interactions["value"].astype(np.float64))


def timed_histories(
    interactions: pd.DataFrame, vocab: Vocab
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(user_id -> distinct item indices in last-interaction order, user_id -> their last-interaction times
    in epoch seconds, user_id -> each item's signal), aligned with the items. Given the training part of a
    temporal split, that is the history as of the cut: each item's last interaction before it.

    The signal is log(1 + the summed strength of the user's events on the item): repeats and stronger event
    types count more, with diminishing returns. Empty when the interactions carry no event types."""
    index = vocab.item_index()
    frame = interactions.sort_values(["ts", "item_id"], kind="stable")
    has_signal = set(SIGNAL_COLUMNS) <= set(frame.columns)
    if has_signal:
        strength = event_strength(frame).groupby([frame["user_id"], frame["item_id"]]).transform("sum")
        frame = frame.assign(signal=np.log1p(strength.clip(lower=0.0)))
    frame = frame.drop_duplicates(["user_id", "item_id"], keep="last")
    codes = frame["item_id"].map(index)
    if codes.isna().any():
        raise DataValidationError("interactions contain items outside the vocabulary")
    seconds = frame["ts"].to_numpy(dtype="datetime64[us]").astype(np.int64) / 1e6
    frame = frame.assign(code=codes.astype(np.int64), seconds=seconds)
    items, times, signals = {}, {}, {}
    columns = ["code", "seconds", "signal"] if has_signal else ["code", "seconds"]
    for user, group in frame.groupby("user_id", sort=True)[columns]:
        items[user] = group["code"].to_numpy()
        times[user] = group["seconds"].to_numpy()
        if has_signal:
            signals[user] = group["signal"].to_numpy()
    return items, times, signals


def pad_histories(histories: list[np.ndarray], length: int) -> np.ndarray:
    """Right-aligned (most recent last) int64 [n, length] matrix; 0 pads the left."""
    out = np.full((len(histories), length), PAD_INDEX, dtype=np.int64)
    for row, items in enumerate(histories):
        tail = items[-length:]
        if len(tail):
            out[row, length - len(tail):] = tail
    return out


def item_categories(meta_items: Path, vocab: Vocab) -> tuple[np.ndarray, list[str]]:
    """Multi-hot [n_items + 1, n_categories] float32 from ``_meta/items.parquet`` (zeros when absent)."""
    if not meta_items.is_file():
        return np.zeros((vocab.n_items + 1, 1), dtype=np.float32), []
    meta = pd.read_parquet(meta_items, columns=["item_id", "categories"])
    meta["item_id"] = meta["item_id"].astype(str)
    names = sorted({c for cats in meta["categories"] if cats is not None for c in cats})
    column = {c: j for j, c in enumerate(names)}
    index = vocab.item_index()
    table = np.zeros((vocab.n_items + 1, max(len(names), 1)), dtype=np.float32)
    for item, cats in zip(meta["item_id"], meta["categories"]):
        row = index.get(item)
        if row is None or cats is None:
            continue
        for c in cats:
            table[row, column[c]] = 1.0
    return table, names
