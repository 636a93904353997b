"""Why an item was recommended: leave-one-out over the user's history, through the served model itself.

The served student scores (h + MLP(h)) . item_out[c] with h pooled over the history: there is no exact
additive item-item term to read off, so a history item's contribution to a recommended item is measured
instead: the item's score (its softmax share, the response's scale) with the full history minus its score
with that one history item removed. Pure arithmetic here; the service runs the re-scoring.
"""

from __future__ import annotations

import numpy as np

from freshrec.core.schemas import PAD_INDEX

TOP_CONTRIBUTORS = 3


def explanation_rows(history: np.ndarray) -> np.ndarray:
    """[L] -> [L + 1, L]: the history itself, then row 1 + j the history without its j-th item, right-aligned
    (padding first, like the batcher's rows). One model call scores them all: a dynamically quantised int8
    graph scales activations per call, so the full history is re-scored beside the shortened ones rather than
    compared with a score from another call."""
    n = history.size
    rows = np.full((n + 1, n), PAD_INDEX, dtype=np.int64)
    rows[0] = history
    rows[1:, 1:] = np.broadcast_to(history, (n, n))[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    return rows


def top_contributors(history: np.ndarray, contributions: np.ndarray,
                     top: int = TOP_CONTRIBUTORS) -> list[list[tuple[int, float]]]:
    """Per recommended item, the ``top`` history items with the largest contributions, largest first.

    ``contributions`` is [L, k]: entry (j, y) is how much history item j raises recommended item y's score.
    Non-finite entries (a model that cannot score a shortened history) are left out.
    """
    out: list[list[tuple[int, float]]] = []
    for column in contributions.T:
        finite = np.flatnonzero(np.isfinite(column))
        order = finite[np.argsort(-column[finite], kind="stable")][:top]
        out.append([(int(history[j]), float(column[j])) for j in order])
    return out
