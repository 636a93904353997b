"""Evaluation protocols: how interactions are cut into a training part and a held-out part.

- ``temporal``: everything in the last ``holdout_days`` days is held out (the default for gates).
- ``msr``: Microsoft Recommenders' ``python_stratified_split(ratio=0.75, filter_by="item", seed=42)``.
The split function is a parameter, so any splitter with that (frame -> train, test) shape plugs in.
Held-out items a user already has in the training part are removed (full ranking excludes seen items).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from freshrec.core.errors import DataValidationError, InvalidInput

Splitter = Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]
PROTOCOLS = ("temporal", "msr")
COLD_USER_MAX_HISTORY = 5  # users with fewer training items than this form the cold-user slice


@dataclass(frozen=True)
class Holdout:
    protocol: str
    train: pd.DataFrame
    test: pd.DataFrame
    cutoff: str | None = None


def temporal_split(interactions: pd.DataFrame, holdout_days: int) -> Holdout:
    end = interactions["ts"].max()
    cutoff = end - pd.Timedelta(days=holdout_days)
    train = interactions[interactions["ts"] <= cutoff]
    test = interactions[interactions["ts"] > cutoff]
    if train.empty or test.empty:
        raise DataValidationError(
            f"temporal holdout of {holdout_days} days leaves an empty part "
            f"({len(train)} train / {len(test)} test rows); land more days or lower training.holdout_days"
        )
    return Holdout("temporal", train, test, cutoff=cutoff.isoformat())


def msr_splitter(seed: int = 42) -> Splitter:
    """The MS Recommenders stratified split from the data plane (75/25 per item)."""
    from freshrec.pipeline.data.split import stratified_split

    return lambda frame: stratified_split(frame, ratio=0.75, filter_by="item", seed=seed)


def make_holdout(
    interactions: pd.DataFrame, protocol: str, holdout_days: int = 7, splitter: Splitter | None = None, seed: int = 42
) -> Holdout:
    if protocol == "temporal":
        return temporal_split(interactions, holdout_days)
    if protocol == "msr":
        train, test = (splitter or msr_splitter(seed))(interactions)
        if train.empty or test.empty:
            raise DataValidationError("the msr split left an empty part; the data set is too small")
        return Holdout("msr", train, test)
    raise InvalidInput(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def relevant_unseen(test: pd.DataFrame, seen: dict[str, np.ndarray], item_index: dict[str, int]) -> dict[str, np.ndarray]:
    """user -> held-out item indices the user has not interacted with in the training part."""
    codes = test["item_id"].map(item_index)
    if codes.isna().any():
        raise DataValidationError("held-out items are missing from the vocabulary")
    frame = test.assign(code=codes.astype(np.int64))
    out = {}
    for user, items in frame.groupby("user_id", sort=True)["code"]:
        known = seen.get(user)
        fresh = np.unique(items.to_numpy())
        if known is not None and len(known):
            fresh = np.setdiff1d(fresh, known)
        if len(fresh):
            out[user] = fresh
    return out
