"""The time-ordered protocols (sequential, prequential): what they hold out, and metrics computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from freshrec.core.errors import InvalidInput
from freshrec.pipeline.evaluation import baselines
from freshrec.pipeline.evaluation.evaluate import evaluate_scorer
from freshrec.pipeline.training.dataset import Vocab, normalise_interactions
from freshrec.pipeline.training.protocols import leave_last_out, prepare


def _frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return normalise_interactions(pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]))


def _no_categories(vocab: Vocab) -> np.ndarray:
    return np.zeros((vocab.n_items + 1, 1), dtype=np.float32)


def _prepare(frame: pd.DataFrame, protocol: str, holdout_days: int = 1):
    return prepare(frame, protocol, holdout_days, 8, 42, _no_categories)


def _ranked_by(vocab: Vocab, order: list[str]):
    """A scorer that ranks the catalogue in ``order`` (best first) whatever the history."""
    index = vocab.item_index()
    scores = np.zeros(vocab.n_items + 1, dtype=np.float32)
    for rank, item in enumerate(order):
        scores[index[item]] = len(order) - rank
    return lambda batch: np.broadcast_to(scores, (len(batch), vocab.n_items + 1))


def _names(vocab: Vocab, codes) -> list[str]:
    return [vocab.items[c - 1] for c in codes if c]


# user a: i1, i2, i1 (a repeat), i3 (the last new item: the target), i2 (after the target: dropped)
# user b: one distinct item (training only); user c: the target is the later of two events with the same time
SEQUENTIAL = [
    ("a", "i1", "2026-01-01T01:00:00Z"), ("a", "i2", "2026-01-01T02:00:00Z"), ("a", "i1", "2026-01-01T03:00:00Z"),
    ("a", "i3", "2026-01-01T04:00:00Z"), ("a", "i2", "2026-01-01T05:00:00Z"),
    ("b", "i1", "2026-01-01T01:00:00Z"), ("b", "i1", "2026-01-01T02:00:00Z"),
    ("c", "i4", "2026-01-01T03:00:00Z"), ("c", "i2", "2026-01-01T06:00:00Z"), ("c", "i1", "2026-01-01T06:00:00Z"),
    ("d", "i5", "2026-01-01T01:00:00Z"), ("d", "i1", "2026-01-01T02:00:00Z"),
]


def test_leave_last_out_holds_out_each_users_last_new_item_and_drops_what_follows() -> None:
    train, test = leave_last_out(_frame(SEQUENTIAL))
    assert sorted(zip(test.user_id, test.item_id)) == [("a", "i3"), ("c", "i1"), ("d", "i1")]
    held = {(u, i, t.hour) for u, i, t in zip(test.user_id, test.item_id, test.ts)}
    assert ("a", "i3", 4) in held
    kept = sorted((u, i, t.hour) for u, i, t in zip(train.user_id, train.item_id, train.ts))
    assert kept == [("a", "i1", 1), ("a", "i1", 3), ("a", "i2", 2), ("b", "i1", 1), ("b", "i1", 2),
                    ("c", "i2", 6), ("c", "i4", 3), ("d", "i5", 1)]
    assert not set(zip(train.index, train.user_id)) & set(zip(test.index, test.user_id))


def test_sequential_inputs_validation_and_fit() -> None:
    data = _prepare(_frame(SEQUENTIAL), "sequential")
    vocab = data.vocab
    assert data.protocol == "sequential"
    assert data.test.users == ["a", "c", "d"]
    assert [_names(vocab, r) for r in data.test.relevant] == [["i3"], ["i1"], ["i1"]]
    # Inputs: distinct items in last-interaction order (a re-viewed i1 after i2).
    assert [_names(vocab, h) for h in data.test.histories] == [["i2", "i1"], ["i4", "i2"], ["i5"]]
    assert data.counts["dropped_after_target"] == 1 and data.counts["test_users"] == 3
    # Early stopping: the same cut on the training part (a: i2 after i1; c: i2 after i4; b and d have one item).
    assert [_names(vocab, t) for t in data.validation.targets] == [["i2"], ["i2"]]
    assert [_names(vocab, h) for h in data.validation.histories] == [["i1"], ["i4"]]
    assert [_names(vocab, h) for h in data.fit] == [["i1"], ["i1"], ["i4"], ["i5"]]
    assert len(data.fit_times) == len(data.fit)


def test_sequential_metrics_by_hand() -> None:
    data = _prepare(_frame(SEQUENTIAL), "sequential")
    n = data.vocab.n_items
    # i1 always first: c and d (target i1, unseen) hit at rank 1; a has seen i1 and i2, so i5 comes first.
    first = evaluate_scorer(_ranked_by(data.vocab, ["i1", "i5", "i4", "i3", "i2"]), data.test, n, k=1)["overall"]
    assert first["hr@1"] == pytest.approx(2 / 3)
    # Reverse order, seen removed: a ranks i5 i4 [i3] -> 3; c ranks i5 i3 [i1] -> 3; d ranks i4 i3 i2 [i1] -> 4.
    reverse = evaluate_scorer(_ranked_by(data.vocab, ["i5", "i4", "i3", "i2", "i1"]), data.test, n, k=4)["overall"]
    assert reverse["hr@4"] == 1.0
    assert reverse["ndcg@4"] == pytest.approx((0.5 + 0.5 + 1 / np.log2(5)) / 3)
    assert evaluate_scorer(_ranked_by(data.vocab, ["i5", "i4", "i3", "i2", "i1"]), data.test, n, k=3)["overall"]["hr@3"] == \
        pytest.approx(2 / 3)


# Training days Jan 1-2, held-out day Jan 4 (holdout_days=1 cuts at Jan 3 12:00).
PREQUENTIAL = [
    ("a", "i5", "2026-01-01T01:00:00Z"), ("a", "i6", "2026-01-01T02:00:00Z"), ("a", "i7", "2026-01-01T03:00:00Z"),
    ("a", "i1", "2026-01-01T04:00:00Z"), ("a", "i2", "2026-01-02T04:00:00Z"),
    ("b", "i3", "2026-01-02T05:00:00Z"),
    ("a", "i3", "2026-01-04T10:00:00Z"),  # target 1, history i5 i6 i7 i1 i2
    ("e", "i2", "2026-01-04T10:15:00Z"),  # target 2, a new user: empty history
    ("a", "i1", "2026-01-04T10:30:00Z"),  # seen in training: not a target, but now the most recent item
    ("a", "i4", "2026-01-04T11:00:00Z"),  # target 3, history i5 i6 i7 i2 i3 i1
    ("a", "i3", "2026-01-04T11:30:00Z"),  # seen earlier in the replay: not a target
    ("e", "i2", "2026-01-04T12:00:00Z"),  # a repeat: not a target
]


def test_prequential_replays_targets_with_the_history_just_before_each() -> None:
    data = _prepare(_frame(PREQUENTIAL), "prequential")
    vocab = data.vocab
    assert data.protocol == "prequential"
    assert data.test.users == ["a", "e", "a"]
    assert [_names(vocab, r) for r in data.test.relevant] == [["i3"], ["i2"], ["i4"]]
    assert [_names(vocab, s) for s in data.test.seen] == [["i5", "i6", "i7", "i1", "i2"], [], ["i5", "i6", "i7", "i2", "i3", "i1"]]
    assert [_names(vocab, h) for h in data.test.histories] == [_names(vocab, s) for s in data.test.seen]
    assert data.test.cold.tolist() == [False, True, False]
    assert data.counts["test_rankings"] == 3 and data.counts["test_users"] == 2
    assert data.counts["cold_test_users"] == 1 and data.counts["cold_test_rankings"] == 1
    # Models learn from the training days only.
    assert sorted(data.train) == ["a", "b"] and _names(vocab, data.train["a"]) == ["i5", "i6", "i7", "i1", "i2"]
    # Early stopping judges what the test judges: each user's next new item (a: i2 after i5 i6 i7 i1; b has one item)
    assert [_names(vocab, t) for t in data.validation.targets] == [["i2"]]
    assert [_names(vocab, h) for h in data.validation.histories] == [["i5", "i6", "i7", "i1"]]
    assert [_names(vocab, h) for h in data.fit] == [["i5", "i6", "i7", "i1"], ["i3"]]


def test_prequential_metrics_by_hand() -> None:
    data = _prepare(_frame(PREQUENTIAL), "prequential")
    n = data.vocab.n_items
    # i2 first, then i4: a has seen i2 both times, so target 1 (i3) ranks i4 [i3] -> 2, a miss at 1; target 2
    # (e, i2 unseen) -> 1; target 3 ranks [i4] -> 1. HR@1 = 2/3 over rankings, not users.
    order = ["i2", "i4", "i3", "i1", "i5", "i6", "i7"]
    assert evaluate_scorer(_ranked_by(data.vocab, order), data.test, n, k=1)["overall"]["hr@1"] == pytest.approx(2 / 3)
    overall = evaluate_scorer(_ranked_by(data.vocab, order), data.test, n, k=4)["overall"]
    assert overall["hr@4"] == 1.0
    assert overall["ndcg@4"] == pytest.approx((1 / np.log2(3) + 1 + 1) / 3)


def test_other_protocols_pass_through_and_unknown_ones_fail() -> None:
    frame = _frame(PREQUENTIAL)
    assert _prepare(frame, "temporal").protocol == "temporal"
    with pytest.raises(InvalidInput, match="sequential"):
        _prepare(frame, "random")


def test_baselines_by_hand() -> None:
    histories = [np.array([1, 2, 3]), np.array([1, 2]), np.array([4, 1, 3])]
    batch = np.array([[0, 4, 1], [0, 0, 0]])
    markov = baselines.markov(histories, 4)(batch)
    assert markov[0].argmax() == 2  # 1 -> 2 twice, 1 -> 3 once
    assert markov[1].argmax() in (1, 3)  # no last item: popularity (items 1 and 3 in three and two histories)
    assert markov[1].argmax() == 1
    together = baselines.cooccurrence(histories, 4)(np.array([[0, 0, 4]]))
    assert together[0, 1:].round().tolist() == [1, 0, 1, 0]  # 4 appears with 1 and 3, once each
    assert baselines.popularity(histories, 4)(batch)[0].tolist() == [0, 3, 2, 2, 1]
