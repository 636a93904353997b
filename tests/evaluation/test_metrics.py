"""Ranking metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from freshrec.pipeline.offline.metrics import ranking_metrics
from freshrec.pipeline.offline.ranking import top_k


def test_single_user_by_hand() -> None:
    # hits at ranks 1 and 3 of the top 3; 4 relevant items in total
    m = ranking_metrics([[10, 20, 30]], [[10, 30, 40, 50]], k=3, n_items=100)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # min(4, 3) ideal hits
    assert m["ndcg@3"] == pytest.approx(dcg / idcg)
    assert m["precision@3"] == pytest.approx(2 / 3)
    assert m["recall@3"] == pytest.approx(2 / 4)
    # MS Recommenders MAP: (P@1 + P@3) / |relevant| = (1 + 2/3) / 4
    assert m["map@3"] == pytest.approx((1 + 2 / 3) / 4)
    assert m["hr@3"] == 1.0
    assert m["coverage@3"] == pytest.approx(3 / 100)


def test_mean_over_users_skips_users_without_relevant_items() -> None:
    m = ranking_metrics([[1, 2], [3, 4], [5, 6]], [[2], [], [7]], k=2, n_items=10)
    assert m["users"] == 2
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 2)
    assert m["hr@2"] == pytest.approx(0.5)
    assert m["map@2"] == pytest.approx((1 / 2) / 2)
    assert m["coverage@2"] == pytest.approx(4 / 10)  # the skipped user's list does not count


def test_perfect_and_empty_rankings() -> None:
    perfect = ranking_metrics([[1, 2, 3]], [[1, 2, 3]], k=3)
    assert perfect["ndcg@3"] == pytest.approx(1.0) and perfect["map@3"] == pytest.approx(1.0)
    miss = ranking_metrics([[7, 8, 9]], [[1]], k=3)
    assert miss["ndcg@3"] == 0.0 and miss["hr@3"] == 0.0
    with pytest.raises(ValueError):
        ranking_metrics([[1]], [[]], k=1)


def test_top_k_excludes_padding_and_seen_items() -> None:
    scores = np.array([[9.0, 5.0, 4.0, 3.0, 2.0], [9.0, 1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    ranked = top_k(lambda h: scores[: len(h)], np.zeros((2, 3), dtype=np.int64), [np.array([1]), np.array([4, 3])], k=2)
    assert ranked.tolist() == [[2, 3], [2, 1]]


def test_per_user_metrics_average_to_the_reported_means() -> None:
    from freshrec.pipeline.offline.metrics import per_user_metrics

    ranked, relevant = [[1, 2], [3, 4], [5, 6]], [[2], [], [5, 9]]
    values, recommended = per_user_metrics(ranked, relevant, k=2)
    assert recommended == {1, 2, 5, 6}
    assert values["ndcg"].tolist() == pytest.approx([1 / math.log2(3), 1.0 / (1 + 1 / math.log2(3))])
    means = ranking_metrics(ranked, relevant, k=2)
    for name in ("ndcg", "recall", "precision", "map", "hr"):
        assert means[f"{name}@2"] == pytest.approx(values[name].mean())


def test_paired_bootstrap_interval() -> None:
    from freshrec.pipeline.offline.metrics import paired_bootstrap

    rng = np.random.default_rng(1)
    base = rng.random(400)
    clear = paired_bootstrap(base + 0.1, base)  # a constant gain: the interval is that gain
    assert clear["mean_diff"] == pytest.approx(0.1) and clear["ci95_low"] == pytest.approx(0.1)
    noisy = paired_bootstrap(base, rng.permutation(base))  # same distribution, no real difference
    assert noisy["ci95_low"] < 0 < noisy["ci95_high"]
    with pytest.raises(ValueError):
        paired_bootstrap(base, base[:-1])
