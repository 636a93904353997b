"""A small learnable ratings file in ML-100K's u.data format (tab-separated user, item, rating, epoch)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def write_u_data(folder: Path, users: int = 80, items: int = 48, days: int = 30, seed: int = 0) -> Path:
    """Users belong to one of 4 taste clusters and mostly rate items of their cluster, a few at a sitting.
    The last fifth of the days brings new users and new items (what a warm start has to grow for)."""
    rng = np.random.default_rng(seed)
    late_day = int(days * 0.8)
    rows = []
    for u in range(users):
        newcomer = u >= int(users * 0.85)
        first_day = late_day + 1 if newcomer else int(rng.integers(0, late_day))
        cluster = u % 4
        pool = [i for i in range(items) if i % 4 == cluster and (i < int(items * 0.9) or first_day > late_day or rng.random() < 0.5)]
        picks = rng.choice(pool, size=min(len(pool), 10), replace=False).tolist() + rng.choice(items, size=2, replace=False).tolist()
        for j, item in enumerate(dict.fromkeys(picks)):
            day = min(days - 1, first_day + j // 3)
            if item >= int(items * 0.9):  # the newest items appear only in the last days
                day = max(day, late_day + 1)
            ts = START + dt.timedelta(days=day, minutes=int(rng.integers(0, 120)) + 2 * j)
            rows.append(f"{u + 1}\t{item + 1}\t{int(rng.integers(1, 6))}\t{int(ts.timestamp())}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "u.data"
    path.write_text("\n".join(rows) + "\n")
    return path
