"""The teacher's closed-form wide layer: Gram matrices, session weighting, EASE solve, validation choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from freshrec.pipeline.training import ease
from freshrec.pipeline.training.ease import WideConfig, WideGrams, ease_weights, gram_matrix, select_wide, session_gram, solve_ease


def test_gram_matrix_counts_users_of_each_item_pair() -> None:
    histories = [np.array([1, 2]), np.array([2, 3]), np.array([1, 2, 3])]
    dense = np.zeros((3, 4))
    for row, items in enumerate(histories):
        dense[row, items] = 1
    np.testing.assert_array_equal(gram_matrix(histories, 4), dense.T @ dense)


def test_session_gram_weights_pairs_by_time_distance() -> None:
    tau = 100.0
    histories = [np.array([1, 2, 3]), np.array([2, 1])]
    times = [np.array([0.0, 50.0, 10_000.0]), np.array([500.0, 400.0])]  # item 3 is far (> 6 tau) from the rest
    got = session_gram(histories, times, 4, tau)
    expected = np.zeros((4, 4))
    expected[[1, 2, 3], [1, 2, 3]] = [2, 2, 1]  # each event with itself: the item counts, as in X^T X
    w = math.exp(-50 / tau) + math.exp(-100 / tau)  # user 1: 50 s apart; user 2: 100 s apart
    expected[1, 2] = expected[2, 1] = w
    np.testing.assert_allclose(got, expected)


def test_plain_ease_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    histories = [rng.choice(np.arange(1, 9), size=4, replace=False) for _ in range(30)]
    x = np.zeros((30, 8))
    for row, items in enumerate(histories):
        x[row, items - 1] = 1
    precision = np.linalg.inv(x.T @ x + 5.0 * np.eye(8))
    expected = -precision / np.diag(precision)
    np.fill_diagonal(expected, 0)
    got = ease_weights(histories, 8, l2=5.0)
    assert got[0].sum() == 0 and got[:, 0].sum() == 0  # padding row and column stay empty
    np.testing.assert_allclose(got[1:, 1:], expected, rtol=1e-5, atol=1e-6)


def test_session_weighting_prefers_items_taken_in_one_sitting() -> None:
    """Item 1 co-occurs with items 2 and 3 equally often, but with 2 in the same minute and with 3 a month
    apart: only the session-aware weights tell them apart."""
    histories, times = [], []
    for u in range(40):
        other = 2 if u % 2 == 0 else 3
        gap = 30.0 if other == 2 else 30 * 86_400.0
        histories.append(np.array([1, other, 4 + u % 5]))
        times.append(np.array([0.0, gap, 2 * gap + 86_400.0 * 90]))
    plain = ease_weights(histories, 8, l2=10.0)
    session = ease_weights(histories, 8, l2=10.0, times=times, session_weight=2.0, tau_s=600.0)
    assert plain[1, 2] == pytest.approx(plain[1, 3], rel=1e-4)
    assert session[1, 2] > 1.5 * session[1, 3]


def test_select_wide_keeps_the_best_scoring_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    histories = [np.array([1, 2, 3]), np.array([2, 3, 4]), np.array([1, 4])]
    times = [np.array([0.0, 1.0, 2.0]), np.array([0.0, 5.0, 9.0]), np.array([0.0, 3.0])]
    grams = WideGrams(histories, times, 4, tau_s=600.0)
    default = WideConfig()
    # a score that peaks at one known configuration of the grid (gamma 2, lambda 400)
    target = solve_ease(grams.plain + 2.0 * grams.session, 400.0)
    chosen, trials = select_wide(grams, lambda w: -float(np.abs(w - target).sum()), default)
    assert (chosen.l2, chosen.session_weight) == (400.0, 2.0)
    assert len(trials) == len(ease.candidate_configs(default)) and all("val_ndcg@10" in t for t in trials)
    # without timestamps only plain EASE is tried
    untimed = WideGrams(histories, None, 4, tau_s=600.0)
    _, trials = select_wide(untimed, lambda w: 0.0, default)
    assert trials and all(t["session_weight"] == 0 for t in trials)
    # a catalogue too large for the search keeps the default without inverting anything
    monkeypatch.setattr(ease, "GRID_MAX_ITEMS", 3)
    chosen, trials = select_wide(grams, lambda w: pytest.fail("no configuration should be scored"), default)
    assert chosen == default and "skipped" in trials[0]


def test_popularity_prior_counts_users_per_item() -> None:
    grams = WideGrams([np.array([1, 2]), np.array([2])], None, 3, tau_s=600.0)
    np.testing.assert_allclose(grams.popularity(), np.log1p([0, 1, 2, 0]).astype(np.float32))


def test_signal_weighting_uses_the_signals_in_the_gram_and_is_chosen_only_when_it_ranks_better() -> None:
    histories = [np.array([1, 2]), np.array([2, 3])]
    signals = [np.array([0.5, 2.0]), np.array([1.0, 3.0])]
    x = np.zeros((2, 4))
    for row, (items, values) in enumerate(zip(histories, signals)):
        x[row, items] = values
    np.testing.assert_allclose(gram_matrix(histories, 4, signals), x.T @ x)
    grams = WideGrams(histories, None, 3, 600.0, signals)
    plain, weighted = WideConfig(l2=1.0, session_weight=0.0), WideConfig(l2=1.0, session_weight=0.0, signal_weighting=True)
    assert not np.allclose(grams.weights(plain), grams.weights(weighted))
    # misaligned signals leave the weighted matrix out, and the grid then holds no weighted configuration
    assert WideGrams(histories, None, 3, 600.0, [np.array([1.0])] * 2).weighted is None
    assert any(c.signal_weighting for c in ease.candidate_configs(WideConfig(), signals=True))
    assert not any(c.signal_weighting for c in ease.candidate_configs(WideConfig(), signals=False))
    chosen, trials = select_wide(grams, lambda w: 0.5, WideConfig())
    assert any(t["signal_weighting"] for t in trials)
    assert not chosen.signal_weighting  # a tie keeps the binary Gram: weighting must rank better to be used


def test_event_strength_sums_repeats_and_weighs_types() -> None:
    import pandas as pd

    from freshrec.pipeline.training.dataset import Vocab, timed_histories

    frame = pd.DataFrame({
        "user_id": ["u", "u", "u", "u"], "item_id": ["a", "a", "b", "c"],
        "ts": pd.to_datetime([1, 2, 3, 4], unit="s", utc=True),
        "event_type": ["view", "purchase", "rating", "unknown"], "value": [1.0, 9.99, 4.0, 1.0],
    })
    items, _, signals = timed_histories(frame, Vocab(items=["a", "b", "c"], users=["u"]))
    assert items["u"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(signals["u"], np.log1p([1.0 + 5.0, 4.0, 1.0]))  # view + purchase; stars; unknown = 1
    assert timed_histories(frame.drop(columns=["event_type", "value"]), Vocab(items=["a", "b", "c"], users=["u"]))[2] == {}
