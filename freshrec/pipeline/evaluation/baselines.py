"""Closed-form baselines that tell order-aware from order-blind ranking on the time-ordered protocols.

Each is fitted on training histories (distinct items in last-interaction order, oldest first: what the models
and the serving tier see) and returns a ``Scorer`` (padded history batch int64 [B, L] -> scores [B, n_items + 1]).

- ``popularity``: how many training users have the item; ignores the user.
- ``cooccurrence``: sum over the user's history items h of how many training users have both h and the item;
  the whole history pooled, order ignored.
- ``markov``: how often the item directly follows the user's *last* history item in the training histories
  (a first-order item-to-item chain); order is all it uses.
The two history-based ones break ties (and rank for an unknown last item) by popularity.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from freshrec.pipeline.offline.ranking import Scorer

TIE_BREAK = 1e-6  # popularity, scaled to at most this, breaks ties without reordering any real count


def _popularity(histories: list[np.ndarray], n_items: int) -> np.ndarray:
    items = np.concatenate(histories) if histories else np.zeros(0, dtype=np.int64)
    return np.bincount(items, minlength=n_items + 1).astype(np.float32)


def _tie_break(counts: np.ndarray) -> np.ndarray:
    return (TIE_BREAK * counts / max(float(counts.max()), 1.0)).astype(np.float32)


def popularity(histories: Iterable[np.ndarray], n_items: int) -> Scorer:
    counts = _popularity(list(histories), n_items)
    counts[0] = 0.0
    return lambda batch: np.broadcast_to(counts, (len(batch), n_items + 1))


def cooccurrence(histories: Iterable[np.ndarray], n_items: int) -> Scorer:
    listed = [h for h in histories if len(h)]
    users = np.zeros((len(listed), n_items + 1), dtype=np.float32)
    for row, items in enumerate(listed):
        users[row, items] = 1.0
    together = users.T @ users
    np.fill_diagonal(together, 0.0)
    together[0] = 0.0
    tie = _tie_break(_popularity(listed, n_items))

    def score(batch: np.ndarray) -> np.ndarray:
        hot = np.zeros((len(batch), n_items + 1), dtype=np.float32)
        np.put_along_axis(hot, batch, 1.0, axis=1)
        hot[:, 0] = 0.0
        return hot @ together + tie

    return score


def markov(histories: Iterable[np.ndarray], n_items: int) -> Scorer:
    listed = [h for h in histories if len(h)]
    follows = np.zeros((n_items + 1, n_items + 1), dtype=np.float32)
    if listed:
        np.add.at(follows, (np.concatenate([h[:-1] for h in listed]), np.concatenate([h[1:] for h in listed])), 1.0)
    follows[0] = 0.0
    tie = _tie_break(_popularity(listed, n_items))
    return lambda batch: follows[batch[:, -1]] + tie
