"""Build the training data of one run: vocabulary, training histories, early-stopping split, holdout.

``prepare`` is pure (interactions in, ``TrainingData`` out); ``save``/``load`` move it between the
DAG's tasks as one file in the run's work folder (XCom carries only its path).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.evaluation.protocols import COLD_USER_MAX_HISTORY, Splitter, make_holdout, relevant_unseen
from tasks.training.dataset import Vocab, build_vocab, pad_histories, user_histories
from tasks.training.trainer import Validation

VALIDATION_SHARE = 0.1


@dataclass
class EvalSet:
    """Users to rank for: their input histories (padded), seen items (excluded) and held-out items."""

    users: list[str]
    histories: np.ndarray
    seen: list[np.ndarray]
    relevant: list[np.ndarray]
    cold: np.ndarray  # bool per user: fewer than COLD_USER_MAX_HISTORY training items


@dataclass
class TrainingData:
    protocol: str
    cutoff: str | None
    vocab: Vocab
    categories: np.ndarray
    history_len: int
    train: dict[str, np.ndarray]  # every training-part history (the final fit)
    fit: list[np.ndarray]  # training histories minus the early-stopping items
    validation: Validation
    test: EvalSet
    counts: dict


def split_validation(
    train: dict[str, np.ndarray], history_len: int, rng: np.random.Generator, share: float = VALIDATION_SHARE
) -> tuple[list[np.ndarray], Validation]:
    """Per user with >= 5 items, a random ``share`` of items is held out for early stopping."""
    fit, inputs, seen, targets = [], [], [], []
    for items in train.values():
        if len(items) < 5:
            fit.append(items)
            continue
        held = rng.random(len(items)) < share
        if not held.any():
            held[rng.integers(len(items))] = True
        kept = items[~held]
        fit.append(kept)
        inputs.append(kept)
        seen.append(kept)
        targets.append(items[held])
    return fit, Validation(pad_histories(inputs, history_len), seen, targets)


def eval_set(train: dict[str, np.ndarray], relevant: dict[str, np.ndarray], history_len: int) -> EvalSet:
    users = sorted(relevant)
    empty = np.zeros(0, dtype=np.int64)
    seen = [train.get(u, empty) for u in users]
    return EvalSet(
        users=users,
        histories=pad_histories(seen, history_len),
        seen=seen,
        relevant=[relevant[u] for u in users],
        cold=np.array([len(s) < COLD_USER_MAX_HISTORY for s in seen], dtype=bool),
    )


def prepare(
    interactions: pd.DataFrame,
    protocol: str,
    holdout_days: int,
    history_len: int,
    seed: int,
    categories_for: Callable[[Vocab], np.ndarray],
    parent_vocab: Vocab | None = None,
    splitter: Splitter | None = None,
) -> TrainingData:
    """``categories_for(vocab)`` returns the item side-feature table (I/O stays with the caller)."""
    vocab = build_vocab(interactions, parent_vocab)
    holdout = make_holdout(interactions, protocol, holdout_days, splitter, seed)
    train = user_histories(holdout.train, vocab)
    relevant = relevant_unseen(holdout.test, train, vocab.item_index())
    fit, validation = split_validation(train, history_len, np.random.default_rng(seed))
    test = eval_set(train, relevant, history_len)
    return TrainingData(
        protocol=protocol,
        cutoff=holdout.cutoff,
        vocab=vocab,
        categories=categories_for(vocab),
        history_len=history_len,
        train=train,
        fit=fit,
        validation=validation,
        test=test,
        counts={
            "interactions": int(len(interactions)),
            "train_interactions": int(len(holdout.train)),
            "test_interactions": int(len(holdout.test)),
            "users": len(vocab.users),
            "items": vocab.n_items,
            "test_users": len(test.users),
            "cold_test_users": int(test.cold.sum()),
            "new_items": vocab.n_items - (parent_vocab.n_items if parent_vocab else 0),
            "new_users": len(vocab.users) - (len(parent_vocab.users) if parent_vocab else 0),
        },
    )


def save(data: TrainingData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def load(path: Path) -> TrainingData:
    with path.open("rb") as fh:
        return pickle.load(fh)
