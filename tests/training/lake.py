"""A tiny clean-events lake written straight as Parquet (the Spark clean job's output contract)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd


def clustered_events(users: int = 60, items: int = 40, days: int = 5, per_user: int = 12, seed: int = 0,
                     start: dt.date = dt.date(2026, 3, 1)) -> pd.DataFrame:
    """Users belong to one of 4 taste clusters and mostly pick items of their cluster: learnable."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        cluster = u % 4
        own = [i for i in range(items) if i % 4 == cluster]
        picks = rng.choice(own, size=min(per_user, len(own)), replace=False).tolist()
        picks += rng.choice(items, size=2, replace=False).tolist()
        for j, item in enumerate(picks):
            day = start + dt.timedelta(days=int(j * days / len(picks)))
            ts = dt.datetime.combine(day, dt.time(12), dt.UTC) + dt.timedelta(minutes=int(rng.integers(0, 600)))
            rows.append({"user_id": f"u{u}", "item_id": f"i{item}", "event_type": "click", "value": 1.0, "ts": ts})
    return pd.DataFrame(rows)


def write_clean_lake(clean_root: Path, events: pd.DataFrame) -> list[Path]:
    """One Parquet file per event day under ``clean_root/ds=D/``."""
    written = []
    for day, part in events.groupby(events["ts"].dt.date):
        folder = clean_root / f"ds={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "part-0000.parquet"
        part.assign(ts=pd.to_datetime(part["ts"], utc=True)).to_parquet(path, index=False)
        written.append(path)
    return written


def write_item_meta(meta_dir: Path, items: int = 40) -> Path:
    meta_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(items)],
        "title": [f"item {i}" for i in range(items)],
        "categories": [[f"g{i % 4}", "all"] for i in range(items)],
    })
    path = meta_dir / "items.parquet"
    frame.to_parquet(path, index=False)
    return path
