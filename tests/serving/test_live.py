"""The pure merge of a snapshot history with a live tail (the order the Spark snapshot builder uses)."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.core.events import Watermark
from freshrec.core.online import LiveEvent
from freshrec.serving.live import MergeMemo, merge_live

INDEX = {f"i{n}": n for n in range(1, 60)}


def ev(item: str, ts: float, seq: int = 1, writer: str = "w") -> LiveEvent:
    return LiveEvent(writer, seq, item, "click", 1.0, ts)


def test_items_sit_at_their_last_interaction_ties_by_item_id() -> None:
    tail = [ev("i5", 10), ev("i3", 12), ev("i5", 13), ev("i9", 12), ev("nope", 14)]
    merged = merge_live(np.array([1, 5, 2]), tail, Watermark(), INDEX, history_length=10)
    assert merged.history.tolist() == [1, 2, 3, 9, 5]  # i3 and i9 tie at 12: by id; i5 last at 13
    assert sorted(merged.live_items.tolist()) == [3, 5, 9] and merged.unknown == 1


def test_covered_entries_are_skipped_and_history_is_cut_to_its_length() -> None:
    wm = Watermark("d", 100.0, {"w": 2})
    tail = [ev("i7", 50, seq=1), ev("i8", 150, seq=2), ev("i4", 60, seq=3)]
    merged = merge_live(np.array([1, 2, 3, 4]), tail, wm, INDEX, history_length=4)
    # i7 is covered (already in the snapshot); i8 is after the snapshot's day, i4 beyond its log position
    assert merged.history.tolist() == [2, 3, 4, 8] and merged.live_items.tolist() == [4, 8]


@pytest.mark.parametrize("n_live", [3, 40])
def test_many_live_items_merge_like_few(n_live: int) -> None:
    tail = [ev(f"i{n}", float(n)) for n in range(10, 10 + n_live)]
    merged = merge_live(np.array([10, 1, 11]), tail, Watermark(), INDEX, history_length=100)
    assert merged.history.tolist() == [1] + list(range(10, 10 + n_live))
    assert merged.history.dtype == np.int64 and merged.live_items.dtype == np.int64


def test_merge_memo_hits_only_the_same_tail_of_the_same_owner() -> None:
    memo = MergeMemo(size=2)
    owner, other = object(), object()
    tail = [ev("i1", 1, seq=1), ev("i2", 2, seq=2)]
    key = MergeMemo.key("u", tail, True)
    memo.put(owner, key, "merged")
    assert memo.get(owner, MergeMemo.key("u", list(tail), True)) == "merged"
    assert memo.get(other, key) is None  # another served version (after a swap) never reuses it
    assert memo.get(owner, MergeMemo.key("u", tail, False)) is None  # exclude_seen changes the state
    grown = [*tail, ev("i3", 3, seq=3)]  # an acknowledged event: a new last entry, a new key
    assert memo.get(owner, MergeMemo.key("u", grown, True)) is None
    trimmed = tail[1:]  # the head left (cap, expiry or a snapshot's trim): the length and first entry change
    assert memo.get(owner, MergeMemo.key("u", trimmed, True)) is None
    assert memo.get(owner, MergeMemo.key("v", tail, True)) is None
    memo.put(owner, MergeMemo.key("v", tail, True), "v")
    memo.put(owner, MergeMemo.key("w", tail, True), "w")  # bounded: the oldest entry leaves
    assert len(memo) == 2 and memo.get(owner, key) is None
    memo.clear()
    assert len(memo) == 0
