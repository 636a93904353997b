"""Time-ordered evaluation protocols beside ``msr`` and ``temporal`` (freshrec.pipeline.offline.holdout).

- ``sequential``: RecBole-style time-ordered leave-last-out. Each user's events are sorted by time (ties keep
  input order); the user's *new-item* interactions are those whose item the user had not interacted with
  before. A user with >= 2 distinct items holds out their last new-item interaction (the test target); the
  training part is every event of the user before it; later events (re-consumptions of earlier items) are
  dropped, they are the future of the test point. The early-stopping validation split is the same cut applied
  once more to the training part (the new item before the target). Full ranking over the whole catalogue,
  the user's earlier items removed: with repeats, the last *new* item is the last event a full ranking that
  excludes seen items can hit. Users with one distinct item are training-only.
- ``prequential``: the ``temporal`` cut (the last ``holdout_days`` days held out) replayed event by event in
  time order. A target is the first interaction of a (user, item) pair in the held-out days that the user did
  not have in the training days. Before each target the model ranks the whole catalogue for the user's history
  as of just before that event (training history + the user's held-out events earlier than it, distinct items
  in last-interaction order, as served) with those items removed; HR@10 = hit or not, nDCG@10 =
  1 / log2(1 + rank) (one relevant item), averaged over targets (not users). Its early-stopping validation is
  the ``sequential`` one on the training days (each user's last new item before the cut), so the choices the
  validation makes (the wide layer's transition term, the students' order window) see order as the test does.

Both produce the same ``TrainingData`` as the other protocols (one row per ranking in ``test``), so every
model, gate and report evaluates on them unchanged. All functions are pure: frames in, arrays out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd

from freshrec.core.errors import DataValidationError, InvalidInput
from freshrec.pipeline.offline.holdout import COLD_USER_MAX_HISTORY, PROTOCOLS, temporal_split
from freshrec.pipeline.training import prepare as prep
from freshrec.pipeline.training.dataset import Vocab, pad_histories
from freshrec.pipeline.training.histories import HistoryBuilder, reference_histories

TIME_ORDERED = ("sequential", "prequential")
ALL_PROTOCOLS = (*PROTOCOLS, *TIME_ORDERED)
# One line each, for reports: what a figure under the protocol measures.
DEFINITIONS = {
    "msr": "MS Recommenders python_stratified_split(ratio=0.75, filter_by='item', seed=42); every held-out item unseen "
           "in training is relevant; full ranking, seen items removed; metrics averaged over users",
    "temporal": "the last holdout_days days held out; every held-out item unseen in training is relevant; full ranking "
                "from the training history, seen items removed; metrics averaged over users",
    "sequential": "time-ordered leave-last-out: per user with >= 2 distinct items, the last interaction with a new item "
                  "is the target, everything before it the input (later re-consumptions dropped); full ranking, the "
                  "user's earlier items removed; HR@10 / nDCG@10 averaged over users",
    "prequential": "the last holdout_days days replayed in time order: each first interaction of a (user, item) pair "
                   "unseen in training is ranked from the history just before it (training + earlier held-out events); "
                   "full ranking, seen items removed; HR@10 / nDCG@10 averaged over these events",
}


def _time_order(interactions: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by time; equal times keep their input order."""
    return interactions.iloc[np.argsort(interactions["ts"].to_numpy(dtype="datetime64[ns]"), kind="stable")]


def leave_last_out(interactions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training part, held-out part) of the ``sequential`` protocol: per user with >= 2 distinct items, the last
    new-item interaction is held out, the events before it train, the events after it are dropped."""
    ordered = _time_order(interactions)
    first_time = ~ordered.duplicated(["user_id", "item_id"], keep="first")
    new_rank = first_time.groupby(ordered["user_id"]).cumsum()  # new items so far, this event included
    distinct = first_time.groupby(ordered["user_id"]).transform("sum")
    position = ordered.groupby("user_id").cumcount()
    is_target = first_time & (new_rank == distinct) & (distinct >= 2)
    target_at = position.where(is_target).groupby(ordered["user_id"]).transform("max")
    held_user = target_at.notna()
    train = ordered[~held_user | (position < target_at)]
    test = ordered[is_target]
    return train, test


@dataclasses.dataclass(frozen=True)
class Replay:
    """The ``prequential`` rankings: per target, the user, the history before it and the target item."""

    users: list[str]
    histories: list[np.ndarray]  # distinct item indices, last-interaction order (oldest first)
    targets: np.ndarray  # item index per ranking


def replay(train: dict[str, np.ndarray], held_out: pd.DataFrame, vocab: Vocab) -> Replay:
    """``prequential`` targets of ``held_out`` (the held-out days' events), each with its history just before it."""
    index = vocab.item_index()
    ordered = _time_order(held_out)
    codes = ordered["item_id"].map(index)
    if codes.isna().any():
        raise DataValidationError("held-out items are missing from the vocabulary")
    empty = np.zeros(0, dtype=np.int64)
    states: dict[str, list[int]] = {}
    users, histories, targets = [], [], []
    for user, item in zip(ordered["user_id"].tolist(), codes.astype(np.int64).tolist()):
        history = states.get(user)
        if history is None:
            history = states[user] = [int(i) for i in train.get(user, empty)]
        if item not in history:
            users.append(user)
            histories.append(np.array(history, dtype=np.int64))
            targets.append(item)
        else:
            history.remove(item)
        history.append(item)
    return Replay(users, histories, np.array(targets, dtype=np.int64))


def replay_set(rankings: Replay, train: dict[str, np.ndarray], history_len: int) -> prep.EvalSet:
    """One row per target; ``cold`` says whether the user had fewer than COLD_USER_MAX_HISTORY training items."""
    empty = np.zeros(0, dtype=np.int64)
    return prep.EvalSet(
        users=rankings.users,
        histories=pad_histories(rankings.histories, history_len),
        seen=rankings.histories,
        relevant=[np.array([t], dtype=np.int64) for t in rankings.targets],
        cold=np.array([len(train.get(u, empty)) < COLD_USER_MAX_HISTORY for u in rankings.users], dtype=bool),
    )


def prepare(
    interactions: pd.DataFrame,
    protocol: str,
    holdout_days: int,
    history_len: int,
    seed: int,
    categories_for: Callable[[Vocab], np.ndarray],
    parent_vocab: Vocab | None = None,
    histories: HistoryBuilder = reference_histories,
) -> prep.TrainingData:
    """``prepare.prepare`` for any of ``ALL_PROTOCOLS``: the same training data, held out by ``protocol``;
    ``histories`` builds every part's histories (the retrain passes Spark's builder)."""
    if protocol in PROTOCOLS:
        return prep.prepare(interactions, protocol, holdout_days, history_len, seed, categories_for, parent_vocab,
                            histories=histories)
    if protocol == "sequential":
        return _sequential(interactions, history_len, seed, categories_for, parent_vocab, histories)
    if protocol == "prequential":
        return _prequential(interactions, holdout_days, history_len, seed, categories_for, parent_vocab, histories)
    raise InvalidInput(f"unknown protocol {protocol!r}; choose from {', '.join(ALL_PROTOCOLS)}")


def _sequential(interactions: pd.DataFrame, history_len: int, seed: int, categories_for: Callable[[Vocab], np.ndarray],
                parent_vocab: Vocab | None, histories: HistoryBuilder) -> prep.TrainingData:
    train, test = leave_last_out(interactions)
    if test.empty:
        raise DataValidationError("the sequential protocol needs users with at least two distinct items")
    kept = pd.concat([train, test]).sort_index()
    # The holdout's splitter hook takes any (frame -> train, test) cut; on ``kept`` this one drops nothing. Early
    # stopping is the same cut once more, on the training part (each user's new item before the target).
    data = prep.prepare(kept, "msr", 0, history_len, seed, categories_for, parent_vocab, splitter=leave_last_out,
                        histories=histories, fit_cut=leave_last_out(train))
    dropped = len(interactions) - len(kept)
    counts = {**data.counts, "interactions": int(len(interactions)), "dropped_after_target": int(dropped)}
    return dataclasses.replace(data, protocol="sequential", counts=counts)


def _prequential(interactions: pd.DataFrame, holdout_days: int, history_len: int, seed: int,
                 categories_for: Callable[[Vocab], np.ndarray], parent_vocab: Vocab | None,
                 histories: HistoryBuilder) -> prep.TrainingData:
    split = temporal_split(interactions, holdout_days)
    # early stopping and the wide layer's choices judge what the test judges: each user's next new item from the
    # history before it (the training days' leave-last-out), not a random part of the history
    data = prep.prepare(interactions, "temporal", holdout_days, history_len, seed, categories_for, parent_vocab,
                        histories=histories, fit_cut=leave_last_out(split.train))
    rankings = replay(data.train, split.test, data.vocab)
    if not len(rankings.targets):
        raise DataValidationError("the prequential replay has no targets: no held-out event is a user's first on its item")
    test = replay_set(rankings, data.train, history_len)
    counts = {**data.counts, "test_users": len(set(rankings.users)), "test_rankings": len(rankings.users),
              "cold_test_users": len({u for u, cold in zip(rankings.users, test.cold) if cold}),
              "cold_test_rankings": int(test.cold.sum())}
    return dataclasses.replace(data, protocol="prequential", test=test, counts=counts)
