"""The online snapshot is bound once per host and memory-mapped by every worker (freshrec.serving.snapshot):
the shared table answers exactly as the in-memory binding does, the user lookup survives key collisions, a
second worker reuses the first one's files, and a worker whose snapshot folder is read-only still serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from freshrec.core.events import Watermark
from freshrec.serving.snapshot import (
    BOUND_DIR,
    OnlineSnapshot,
    UserIndex,
    _write_bound,
    bind_snapshot,
    bound_key,
    open_snapshot,
    read_snapshot,
    user_key,
)
from freshrec.serving.versions import seen_positions
from tests.serving.builders import write_snapshot

ITEMS = [f"i{n}" for n in range(40)]


def _users(n: int = 300, seed: int = 5) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    users = {f"user-{u}": [f"i{i}" for i in rng.integers(0, 45, rng.integers(0, 30))] for u in range(n)}
    users["ünïcode ✓"] = ["i1", "i2"]
    return users


def _tables(folder: Path) -> list[str]:
    """What a snapshot's ``_bound`` folder holds besides its lock files (one per table): tables, or leftovers."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


def _same(a, b) -> None:
    assert len(a.history) == len(b.history) == len(a.users) == len(b.users)
    for row in range(len(a.history)):
        assert a.history[row].tolist() == b.history[row].tolist()
        assert a.seen[row].tolist() == b.seen[row].tolist()
    for name in ("popular", "popular_scores", "popularity_of"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_the_shared_table_answers_as_the_in_memory_one(tmp_path: Path) -> None:
    users = _users()
    write_snapshot(tmp_path, "snap-1", users, {f"i{i}": float(i % 7) for i in range(45)})
    reference = bind_snapshot(read_snapshot(tmp_path, "snap-1"), ITEMS, history_length=8)
    shared = open_snapshot(tmp_path, "snap-1").bind(ITEMS, history_length=8)
    _same(reference, shared)
    for user in users:
        assert shared.row(user) == reference.row(user) is not None
    assert shared.row("nobody") is None and shared.row("") is None
    # the arrays are maps of the files, not this worker's copies
    assert not shared.history.values.flags.owndata and not shared.history.values.flags.writeable
    # stored narrow (half the pages), read back as the model's int64 indices
    assert shared.history.values.dtype == np.int32 and shared.history[shared.row("user-3")].dtype == np.int64
    folder = tmp_path / "snap-1" / BOUND_DIR / bound_key(ITEMS, 8)
    assert json.loads((folder / "meta.json").read_text())["users"] == len(users)
    # a second worker maps the same files; another vocabulary or history length gets its own table
    stamp = (folder / "meta.json").stat().st_mtime_ns
    _same(shared, open_snapshot(tmp_path, "snap-1").bind(ITEMS, history_length=8))
    assert (folder / "meta.json").stat().st_mtime_ns == stamp
    other = open_snapshot(tmp_path, "snap-1").bind(ITEMS[:20], history_length=8)
    assert len(_tables(tmp_path / "snap-1" / BOUND_DIR)) == 2 and other.row("user-3") == reference.row("user-3")


def test_a_worker_that_loses_the_race_keeps_the_winners_table(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "snap-1", _users(50), {"i1": 1.0})
    table = open_snapshot(tmp_path, "snap-1").bind(ITEMS, history_length=4)
    target = tmp_path / "snap-1" / BOUND_DIR / bound_key(ITEMS, 4)
    _write_bound(tmp_path / "snap-1", target, ITEMS, 4)  # what a second worker does when it built the same table
    assert _tables(target.parent) == [target.name], "no staging folder is left behind"
    _same(table, open_snapshot(tmp_path, "snap-1").bind(ITEMS, history_length=4))


def test_a_read_only_snapshot_folder_is_bound_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lake mounted read-only where serving runs (the tests run as root here, so a chmod would not stop a write:
    the write is made to fail as the filesystem would fail it)."""
    from freshrec.serving import snapshot as module

    write_snapshot(tmp_path, "snap-1", _users(50), {"i1": 1.0})

    def read_only(*_args) -> None:
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(module, "_build_apart", read_only)
    table = open_snapshot(tmp_path, "snap-1").bind(ITEMS, history_length=4)
    _same(table, bind_snapshot(read_snapshot(tmp_path, "snap-1"), ITEMS, 4))
    assert _tables(tmp_path / "snap-1" / BOUND_DIR) == []


def test_the_user_lookup_tells_a_key_collision_from_a_hit() -> None:
    key = user_key("y")
    index = UserIndex(np.array([key, key], dtype=np.uint64), np.array([0, 1]), pa.array(["x", "y"]))
    assert index.row("y") == 1 and index.row("x") is None  # "x" has another key: not found, even though stored
    built = UserIndex.build(["b", "a", "c"])
    assert [built.row(u) for u in ("a", "b", "c", "d")] == [1, 0, 2, None]


def test_seen_positions_are_mapped_per_request() -> None:
    lists = pa.list_(pa.string())
    snapshot = OnlineSnapshot("s", ["a"], pa.array([["x", "y"]], lists), pa.array([["x", "y", "z"]], lists),
                              pa.array(["x"]), np.array([1.0]), Watermark())
    table = bind_snapshot(snapshot, ["x", "y", "z"], 4)
    full = seen_positions(table, np.array([-1, 0, 1, 2]))
    assert full.complete and full[0].tolist() == [0, 1, 2]
    part = seen_positions(table, np.array([-1, 0, -1, 1]))  # y is not a candidate
    assert not part.complete and part[0].tolist() == [0, 1]


def test_a_snapshot_that_is_not_one_is_refused_when_opened(tmp_path: Path) -> None:
    """Before any model binds it: the reconciler then keeps the snapshot it serves (tests/serving/test_hot_swap.py)."""
    import pyarrow.parquet as pq

    from freshrec.core.errors import DataValidationError

    write_snapshot(tmp_path, "snap-1", _users(5), {"i1": 1.0})
    (tmp_path / "snap-1" / "users.parquet").write_bytes(b"not parquet")
    with pytest.raises(pa.ArrowInvalid):
        open_snapshot(tmp_path, "snap-1")
    write_snapshot(tmp_path, "snap-2", _users(5), {"i1": 1.0})
    pq.write_table(pa.table({"user_id": ["u"]}), tmp_path / "snap-2" / "users.parquet")
    with pytest.raises(DataValidationError, match="lacks the columns"):
        open_snapshot(tmp_path, "snap-2")
