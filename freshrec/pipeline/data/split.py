"""The Microsoft Recommenders random stratified split, reproduced (pure: a frame in, two frames out).

``python_stratified_split(data, ratio=0.75, filter_by="item", seed=42)`` of the released package
(recommenders 1.2.1, ``recommenders/datasets/python_splitters.py``, ``_do_stratification`` with
``is_random=True``) does:
  np.random.seed(seed); random = np.random.rand(len(data))   # one draw per row, in input order
  sort by (group column, random); rank = cumcount + 1 within the group
  train = rank <= round(ratio * group size)                  # pandas round: half to even
  test  = round(ratio * group size) < rank <= group size
The same steps here give the same rows, in the same order, for the same input order (ML-100K
``u.data`` and RecBole's ``ml-100k.inter`` list ratings in the same order); tests check it against
the real package. (Some repository revisions compare rank / size <= ratio instead, which sends the
only rating of a single-rating item to test; the released rule keeps it in train.)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from freshrec.core.errors import InvalidInput


def stratified_split(
    data: pd.DataFrame,
    ratio: float = 0.75,
    filter_by: Literal["user", "item"] = "item",
    seed: int = 42,
    col_user: str = "user_id",
    col_item: str = "item_id",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): per user or item, a random ``ratio`` of its rows goes to train, the rest to test.

    Rows come out ordered by the group column (numerically when the ids are numbers, as recommenders
    loads them) and then by the random draw, like the original. The input is not modified.
    """
    if filter_by not in ("user", "item"):
        raise InvalidInput("filter_by must be 'user' or 'item'")
    if not 0 < ratio < 1:
        raise InvalidInput(f"ratio must be between 0 and 1 (exclusive), got {ratio}")
    group_col = col_user if filter_by == "user" else col_item
    for column in (col_user, col_item):
        if column not in data.columns:
            raise InvalidInput(f"the data has no {column!r} column (columns: {list(data.columns)})")

    # Legacy MT19937 on purpose: the reference seeds np.random, the same stream as RandomState(seed).
    random = np.random.RandomState(seed).rand(len(data))
    key = _sort_key(data[group_col])
    order = np.lexsort((random, key))
    sorted_keys = key[order]
    group_start = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if len(order) else np.array([], dtype=bool)
    group_id = np.cumsum(group_start) - 1
    starts = np.flatnonzero(group_start)
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - starts[group_id] + 1
    train_size = np.round(ratio * sizes)[group_id]  # half to even, like pandas' round on the count column

    ordered = data.iloc[order]
    return ordered[rank <= train_size], ordered[rank > train_size]


def _sort_key(ids: pd.Series) -> np.ndarray:
    numeric = pd.to_numeric(ids, errors="coerce")
    if not numeric.isna().any():
        return numeric.to_numpy()
    return ids.astype(str).to_numpy()
