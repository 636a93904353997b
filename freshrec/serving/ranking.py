"""Pure ranking arithmetic on score rows: seen-item masking and top-k. No I/O, no state."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int, masked_positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions and scores of the k best entries of a 1-D score row, best first.

    ``masked_positions`` (candidate positions, e.g. items the user has seen; repeats allowed) never appear in
    the result; k shrinks when fewer candidates remain.
    """
    if masked_positions is not None and masked_positions.size:
        scores = scores.copy()
        scores[masked_positions] = -np.inf
        available = scores.size - masked_positions.size
        if available < k:  # a repeated position masks one candidate, not two: count what is masked
            available = scores.size - int(np.count_nonzero(np.isneginf(scores)))
    else:
        available = scores.size
    k = min(k, available)
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    if k < scores.size:
        part = np.argpartition(scores, scores.size - k)[scores.size - k:]
    else:
        part = np.arange(scores.size)
    order = part[np.argsort(scores[part])[::-1]]
    return order, scores[order]


def right_aligned(rows: list[np.ndarray], pad: int = 0) -> np.ndarray:
    """Stack 1-D int64 rows of different lengths into [n, max_len], right-aligned (most recent last)."""
    if len(rows) == 1 and rows[0].size:
        return rows[0].reshape(1, -1)  # the common idle-server case: a view, no copy
    width = max(1, max((r.size for r in rows), default=1))
    out = np.full((len(rows), width), pad, dtype=np.int64)
    for i, row in enumerate(rows):
        if row.size:
            out[i, width - row.size:] = row
    return out


def padded_candidates(rows: list[np.ndarray], pad: int = 0) -> np.ndarray:
    """Stack 1-D candidate rows into [n, max_len], left-aligned; padding slots are scored and ignored."""
    width = max(r.size for r in rows)
    out = np.full((len(rows), width), pad, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : row.size] = row
    return out


def softmax_shares(scores: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """The share of each ``picked`` score in the softmax over its whole row: exp(p) / sum(exp(row)).

    The model is trained with a softmax over the catalogue, so this is its probability that the user's next
    interaction is that item. ``scores`` is a row [C] or rows [n, C]; ``picked`` holds values taken from it
    ([k], or [n, k]), e.g. the scores :func:`top_k` returns.
    """
    top = scores.max(axis=-1, keepdims=True)
    return np.exp(picked - top) / np.exp(scores - top).sum(axis=-1, keepdims=True)
