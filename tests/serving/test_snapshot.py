"""Binding a snapshot to a model vocabulary: unknown items dropped, history truncated, seen distinct."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from freshrec.core.events import Watermark
from freshrec.serving.ragged import Ragged
from freshrec.serving.ranking import top_k
from freshrec.serving.snapshot import OnlineSnapshot, bind_snapshot

LISTS = pa.list_(pa.string())


def test_bind_snapshot_maps_truncates_and_deduplicates() -> None:
    snapshot = OnlineSnapshot(
        name="s",
        user_ids=["a", "b", "c"],
        histories=pa.array([["x", "y", "gone", "z"], None, ["z"]], LISTS),
        seen=pa.array([["x", "x", "z"], [], None], LISTS),
        item_ids=pa.array(["z", "x", "unknown"]),
        popularity=np.array([1.0, 3.0, 9.0]),
        watermark=Watermark(),
    )
    table = bind_snapshot(snapshot, ["x", "y", "z"], history_length=2)
    assert [table.history[r].tolist() for r in range(3)] == [[2, 3], [], [3]]
    assert [table.seen[r].tolist() for r in range(3)] == [[1, 3], [], []]
    assert table.popular.tolist() == [1, 3] and table.popular_scores.tolist() == [0.75, 0.25]
    assert table.popularity_of.tolist() == [0.0, 0.75, 0.0, 0.25]
    assert table.row("b") == 1 and table.row("nobody") is None


def test_empty_snapshot_falls_back_to_catalogue_order() -> None:
    table = bind_snapshot(OnlineSnapshot.empty(), ["x", "y"], history_length=5)
    assert len(table.history) == 0 and table.popular.tolist() == [1, 2]


def test_ragged_operations() -> None:
    rows = Ragged.from_counts(np.array([5, 1, 5, 2, 7, 3]), np.array([3, 0, 2, 1]))
    assert [rows[r].tolist() for r in range(4)] == [[5, 1, 5], [], [2, 7], [3]]
    assert [rows.last(1)[r].tolist() for r in range(4)] == [[5], [], [7], [3]]
    assert [rows.distinct(8)[r].tolist() for r in range(4)] == [[1, 5], [], [2, 7], [3]]
    table = np.array([-1, 0, 1, -1, 2, -1, -1, -1])  # value -> position, -1 = dropped
    assert [rows.mapped(table)[r].tolist() for r in range(4)] == [[0], [], [1], []]


def test_top_k_skips_masked_positions() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7], dtype=np.float32)
    positions, values = top_k(scores, 3, np.array([1]))
    assert positions.tolist() == [3, 2, 0] and values.tolist() == [np.float32(0.7), np.float32(0.5), np.float32(0.1)]
    assert top_k(scores, 10, np.array([0, 1, 2]))[0].tolist() == [3]
    # A position masked twice (seen in the snapshot and live) hides one candidate, not two.
    assert top_k(scores, 3, np.array([1, 1, 2]))[0].tolist() == [3, 0]
    assert top_k(scores, 1, np.array([1, 1]))[0].tolist() == [3]
