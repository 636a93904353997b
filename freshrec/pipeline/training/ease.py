"""Closed-form item-item weights for the teacher's wide layer: EASE (Steck, WWW'19) on a session-aware
Gram matrix.

EASE: B = I - P / diag(P) with P = (G + lambda I)^-1, diag(B) = 0, where G = X^T X counts how many users
interacted with both items. The session-aware variant adds gamma x S, where S counts the same pairs
weighted by how close in time the user touched the two items (exp(-|t_i - t_j| / tau)): items taken in
one sitting are stronger evidence of each other than items months apart. On ML-100K (msr split) plain
EASE reaches nDCG@10 0.485 and the session-aware one 0.497. Scoring is unchanged (history multi-hot x B),
so serving never needs the timestamps; only the estimate of B uses them.

gamma and lambda are chosen on the early-stopping validation split (``select_wide``): gamma = 0 is plain
EASE, so data without session structure simply keeps it. So is ``signal_weighting``: X holds each pair's
signal (log of the summed event strength: repeats and purchases weigh more than one view) instead of 1 in the
estimate of B; scoring stays the binary history x B. ``freshrec bench signals`` measures when that helps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TypeGuard

import numpy as np
import scipy.sparse as sparse

log = logging.getLogger(__name__)

SESSION_WINDOW = 6.0  # pairs further apart than this many tau contribute < exp(-6): skipped
GRID_MAX_ITEMS = 8_000  # above this one inversion takes minutes: no grid search, the defaults are used


@dataclass(frozen=True)
class WideConfig:
    l2: float = 400.0
    session_weight: float = 2.0  # gamma; 0 = plain EASE
    session_tau_s: float = 600.0
    # x log(1 + item count), added to the scores: breaks the ties of users whose history says little (a
    # cold user's closed-form scores are all ~0) in favour of popular items, too small to reorder the rest.
    # ML-100K: temporal holdout nDCG@10 0.16 -> 0.27 (cold users 0.02 -> 0.53), msr unchanged (0.4959 -> 0.4958).
    popularity_prior: float = 1e-3
    signal_weighting: bool = False  # the Gram matrix from the per-pair signals instead of 0/1
    # Order-aware teachers (training.order_window > 0): the newest history item's row of the transition matrix
    # (freshrec.pipeline.training.ease.transitions) x follow_scale is added to history x B. 0 = order-blind.
    follow_scale: float = 0.0
    follow_smoothing: float = 10.0

    def to_dict(self) -> dict:
        return asdict(self)


def gram_matrix(histories: list[np.ndarray], n_rows: int, values: list[np.ndarray] | None = None) -> np.ndarray:
    """X^T X for the user x item matrix, binary or holding ``values`` (row/column 0 = padding, left empty)."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate(histories) if histories else np.zeros(0, dtype=np.int64)
    data = np.concatenate(values).astype(np.float64) if values else np.ones(len(cols))
    x = sparse.csr_matrix((data, (rows, cols)), shape=(len(histories), n_rows))
    return (x.T @ x).toarray()


def session_gram(histories: list[np.ndarray], times: list[np.ndarray], n_rows: int, tau_s: float) -> np.ndarray:
    """Sum over users of exp(-|t_i - t_j| / tau) for every pair of distinct items of the user, plus each
    item's own count on the diagonal (a pair of an event with itself), like X^T X.

    Each user's items are sorted by time; pairs are visited by their distance k in that order, all users
    at once, until no user has two items within SESSION_WINDOW x tau at distance k. Cost: the number of
    close pairs, not the square of the history lengths.
    """
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    user = np.repeat(np.arange(len(histories)), lengths)
    items = np.concatenate(histories) if len(histories) else np.zeros(0, dtype=np.int64)
    t = np.concatenate(times).astype(np.float64) if len(times) else np.zeros(0)
    order = np.lexsort((t, user))
    user, items, t = user[order], items[order], t[order]
    rows, cols, weights = [items], [items], [np.ones(len(items))]
    horizon = SESSION_WINDOW * tau_s
    k = 1
    while k < len(items):
        close = (user[k:] == user[:-k]) & (t[k:] - t[:-k] <= horizon)
        if not close.any():
            break
        a, b = items[:-k][close], items[k:][close]
        w = np.exp(-(t[k:] - t[:-k])[close] / tau_s)
        rows += [a, b]
        cols += [b, a]
        weights += [w, w]
        k += 1
    pairs = sparse.coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, n_rows))
    return pairs.toarray()


def solve_ease(gram: np.ndarray, l2: float) -> np.ndarray:
    """float32 [n_rows, n_rows] weights from a Gram matrix whose row/column 0 is padding (left zero)."""
    inner = gram[1:, 1:].astype(np.float64, copy=True)
    inner[np.diag_indices_from(inner)] += l2
    precision = np.linalg.inv(inner)
    weights = -precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    out = np.zeros_like(gram, dtype=np.float32)
    out[1:, 1:] = weights
    return out


class WideGrams:
    """The Gram matrices of one set of histories (binary, session, signal-weighted), computed once and reused
    across configurations. Times or signals that do not align with the histories leave their matrix out."""

    def __init__(self, histories: list[np.ndarray], times: list[np.ndarray] | None, n_items: int, tau_s: float,
                 signals: list[np.ndarray] | None = None) -> None:
        self.n_rows = n_items + 1
        self.plain = gram_matrix(histories, self.n_rows)
        self.session = session_gram(histories, times, self.n_rows, tau_s) if _aligned(times, histories) else None
        self.weighted = gram_matrix(histories, self.n_rows, signals) if _aligned(signals, histories) else None
        self.tau_s = tau_s

    def popularity(self) -> np.ndarray:
        """log(1 + number of users of each item), float32 [n_rows] (0 for padding)."""
        return np.log1p(np.diag(self.plain)).astype(np.float32)

    def weights(self, config: WideConfig) -> np.ndarray:
        gram = self.weighted if config.signal_weighting and self.weighted is not None else self.plain
        if config.session_weight > 0 and self.session is not None:
            gram = gram + config.session_weight * self.session
        return solve_ease(gram, config.l2)


def _aligned(per_item: list[np.ndarray] | None, histories: list[np.ndarray]) -> TypeGuard[list[np.ndarray]]:
    if not per_item:
        return False
    return len(per_item) == len(histories) and all(len(v) == len(h) for v, h in zip(per_item, histories))


def ease_weights(histories: list[np.ndarray], n_items: int, l2: float = 400.0,
                 times: list[np.ndarray] | None = None, session_weight: float = 0.0, tau_s: float = 600.0) -> np.ndarray:
    """float32 [n_items + 1, n_items + 1] item-to-item weights; row/column 0 (padding) are zero.

    Without ``times`` (or with ``session_weight`` 0) this is plain EASE."""
    grams = WideGrams(histories, times if session_weight > 0 else None, n_items, tau_s)
    return grams.weights(WideConfig(l2=l2, session_weight=session_weight, session_tau_s=tau_s))


def candidate_configs(default: WideConfig, signals: bool = False) -> list[WideConfig]:
    """Plain EASE and the session-aware variant over a geometric range of regularisation, each binary and,
    with ``signals``, signal-weighted. The session term adds (1 + gamma) x the item counts to the diagonal,
    so its lambda grid is scaled alike."""
    configs = []
    for weighted in (False, True) if signals else (False,):
        for gamma in (0.0, 2.0):
            for l2 in (100.0, 200.0, 400.0, 800.0, 1600.0):
                configs.append(WideConfig(l2=l2 * (1 + gamma / 2), session_weight=gamma, session_tau_s=default.session_tau_s,
                                          popularity_prior=default.popularity_prior, signal_weighting=weighted))
    return configs


def select_wide(grams: WideGrams, score: Callable[[np.ndarray], float], default: WideConfig) -> tuple[WideConfig, list[dict]]:
    """The configuration whose weights ``score`` best (validation nDCG@10 of history x B); the trials for
    the training summary. Large catalogues skip the search (one inversion costs minutes) and keep ``default``."""
    if grams.n_rows - 1 > GRID_MAX_ITEMS:
        return default, [{"skipped": f"{grams.n_rows - 1} items > {GRID_MAX_ITEMS}: default configuration"}]
    trials = []
    best, best_score = default, -np.inf
    for config in candidate_configs(default, signals=grams.weighted is not None):
        if config.session_weight > 0 and grams.session is None:
            continue
        value = float(score(grams.weights(config)))
        trials.append({**config.to_dict(), "val_ndcg@10": value})
        if value > best_score:
            best, best_score = config, value
    log.info("wide layer: %s (validation nDCG@10 %.4f over %d configurations)", best, best_score, len(trials))
    return best, trials


FOLLOW_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # x the typical top-10 score of history x B
FOLLOW_SMOOTHING = (1.0, 10.0)


def successor_counts(histories: list[np.ndarray], n_rows: int) -> np.ndarray:
    """[n_rows, n_rows]: how often each item came right after item i in the ordered histories (newest last);
    row and column 0 (padding) stay 0."""
    pairs = [(h[:-1], h[1:]) for h in histories if len(h) > 1]
    counts = np.zeros((n_rows, n_rows), dtype=np.float64)
    if pairs:
        np.add.at(counts, (np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])), 1.0)
    counts[0] = 0.0
    counts[:, 0] = 0.0
    return counts


def transitions(histories: list[np.ndarray] | np.ndarray, n_rows: int, smoothing: float) -> np.ndarray:
    """[n_rows, n_rows] float32: :func:`successor_counts` (or those counts, given) divided by (i's successor
    count + ``smoothing``): a first-order Markov model in closed form, shrunk towards 0 for items seen followed
    only a few times."""
    counts = histories if isinstance(histories, np.ndarray) else successor_counts(histories, n_rows)
    return (counts / (counts.sum(axis=1, keepdims=True) + smoothing)).astype(np.float32)


def select_follow(wide: WideConfig, wide_weights: np.ndarray, histories: list[np.ndarray],
                  score: Callable[[np.ndarray, np.ndarray | None], float], typical: float) -> tuple[WideConfig, list[dict]]:
    """The transition term's scale and smoothing that rank the validation split best, with 0 (order-blind)
    among the candidates: ``score(B, T)`` is the validation nDCG@10 of history x B + T[newest item]. Scales
    are multiples of ``typical`` (a top-10 score of history x B), so the grid fits any catalogue."""
    trials = [{"follow_scale": 0.0, "val_ndcg@10": float(score(wide_weights, None))}]
    best, best_score = wide, trials[0]["val_ndcg@10"]
    counts = successor_counts(histories, wide_weights.shape[0])  # once for every smoothing
    for smoothing in FOLLOW_SMOOTHING:
        matrix = transitions(counts, wide_weights.shape[0], smoothing)
        for factor in FOLLOW_SCALES:
            scale = factor * typical
            value = float(score(wide_weights, scale * matrix))
            trials.append({"follow_scale": scale, "follow_smoothing": smoothing, "val_ndcg@10": value})
            if value > best_score:
                best, best_score = replace(wide, follow_scale=scale, follow_smoothing=smoothing), value
    log.info("transition term: scale %.4g, smoothing %g (validation nDCG@10 %.4f)", best.follow_scale,
             best.follow_smoothing, best_score)
    return best, trials
