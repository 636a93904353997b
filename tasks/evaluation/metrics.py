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


def ranking_metrics(
    ranked: np.ndarray | Sequence[Sequence[int]],
    relevant: Sequence[Sequence[int]],
    k: int = 10,
    n_items: int | None = None,
) -> dict[str, float]:
    """Mean metrics over users. ``ranked[u]`` is the top list (best first), ``relevant[u]`` the held-out items."""
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} ranked lists for {len(relevant)} users")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    sums = dict.fromkeys(("ndcg", "recall", "precision", "map", "hr"), 0.0)
    users = 0
    recommended: set[int] = set()
    for top, rel in zip(ranked, relevant):
        rel_set = set(int(i) for i in rel)
        if not rel_set:
            continue
        users += 1
        top = [int(i) for i in list(top)[:k]]
        recommended.update(top)
        hits = np.array([i in rel_set for i in top] + [False] * (k - len(top)), dtype=bool)
        n_hits = int(hits.sum())
        idcg = discounts[: min(len(rel_set), k)].sum()
        sums["ndcg"] += float(discounts[hits].sum() / idcg)
        sums["recall"] += n_hits / len(rel_set)
        sums["precision"] += n_hits / k
        precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        sums["map"] += float(precision_at_hit.sum() / len(rel_set))
        sums["hr"] += float(n_hits > 0)
    if users == 0:
        raise ValueError("no user has relevant items")
    out = {f"{name}@{k}": value / users for name, value in sums.items()}
    out[f"coverage@{k}"] = len(recommended) / n_items if n_items else float("nan")
    out["users"] = users
    return out
