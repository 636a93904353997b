"""Full-ranking top-k metrics with binary relevance (every held-out interaction is relevant).

Definitions follow Microsoft Recommenders' python_evaluation at k (their README table):
- nDCG@k = DCG@k / IDCG@k with gains 1/log2(rank + 1), IDCG over min(|relevant|, k) hits;
- Precision@k = hits / k; Recall@k = hits / |relevant|;
- MAP@k = sum over hit ranks r <= k of Precision@r, divided by |relevant| (not by k);
- HR@k = share of users with at least one hit; coverage = distinct recommended items / catalogue size.
Users without relevant items are skipped. All functions are pure: ranked item lists in, floats out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_NAMES = ("ndcg@10", "recall@10", "precision@10", "map@10", "hr@10", "coverage@10")
ItemLists = Sequence[Sequence[int] | np.ndarray]  # one list (or int array) of item indices per user


def per_user_metrics(
    ranked: np.ndarray | ItemLists,
    relevant: ItemLists,
    k: int = 10,
) -> tuple[dict[str, np.ndarray], set[int]]:
    """Per-user metric arrays (users without relevant items skipped) and the set of recommended items."""
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} ranked lists for {len(relevant)} users")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values: dict[str, list[float]] = {name: [] for name in ("ndcg", "recall", "precision", "map", "hr")}
    recommended: set[int] = set()
    for top, rel in zip(ranked, relevant):
        rel_set = set(int(i) for i in rel)
        if not rel_set:
            continue
        top = [int(i) for i in list(top)[:k]]
        recommended.update(top)
        hits = np.array([i in rel_set for i in top] + [False] * (k - len(top)), dtype=bool)
        n_hits = int(hits.sum())
        idcg = discounts[: min(len(rel_set), k)].sum()
        values["ndcg"].append(float(discounts[hits].sum() / idcg))
        values["recall"].append(n_hits / len(rel_set))
        values["precision"].append(n_hits / k)
        precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        values["map"].append(float(precision_at_hit.sum() / len(rel_set)))
        values["hr"].append(float(n_hits > 0))
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}, recommended


def ranking_metrics(
    ranked: np.ndarray | ItemLists,
    relevant: ItemLists,
    k: int = 10,
    n_items: int | None = None,
) -> dict[str, float]:
    """Mean metrics over users. ``ranked[u]`` is the top list (best first), ``relevant[u]`` the held-out items."""
    values, recommended = per_user_metrics(ranked, relevant, k)
    users = len(values["ndcg"])
    if users == 0:
        raise ValueError("no user has relevant items")
    out = {f"{name}@{k}": float(v.mean()) for name, v in values.items()}
    out[f"coverage@{k}"] = len(recommended) / n_items if n_items else float("nan")
    out["users"] = users
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` (per-user metrics of two models on the same users) and its 95% bootstrap interval:
    a difference whose interval holds 0 is not shown by this data."""
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("paired_bootstrap needs two non-empty arrays of the same length")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"mean_diff": float(diff.mean()), "ci95_low": float(low), "ci95_high": float(high), "users": int(len(diff))}
