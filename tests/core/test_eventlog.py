"""The ingestion log: group commit, sequence order, sealing, orphan recovery (torn lines cut), day rotation."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

from freshrec.core.eventlog import EventLog, seal_orphans
from freshrec.core.events import CleanEvent
from freshrec.core.layout import Layout


def _events(n: int, user: str = "u") -> list[CleanEvent]:
    return [CleanEvent(user, f"i{k}", "click", 1.0, 1_700_000_000.0 + k, None) for k in range(n)]


def _lines(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for p in sorted(paths) for line in p.read_text().splitlines()]


def test_concurrent_appends_share_fsyncs_and_keep_sequence_order(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fsyncs: list[float] = []
    log = EventLog(layout, fsync=True, max_bytes=1 << 20, max_age_s=3600, observe_fsync=fsyncs.append)
    futures = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for k in range(25):
            future, appended = log.append(_events(2, user=f"c{n}"), [f"c{n}-{k}-a", f"c{n}-{k}-b"])
            with lock:
                futures.append((future, appended))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for future, _ in futures:
        future.result(timeout=10)
    # Acknowledged = already on disk in the open segment, before any seal.
    on_disk = _lines(list(layout.landing_open.glob("*.jsonl")))
    assert [e["seq"] for e in on_disk] == list(range(1, 401))
    assert len({e["event_id"] for e in on_disk}) == 400
    assert len(fsyncs) < 200, "group commit: one fsync serves several queued batches"
    log.close()
    sealed = list(layout.landing.glob("*.jsonl"))
    assert len(sealed) == 1 and not list(layout.landing_open.glob("*.jsonl"))
    assert _lines(sealed) == on_disk
    assert {e["writer"] for e in on_disk} == {log.writer}


def test_orphan_segments_are_sealed_without_their_torn_line_and_live_ones_left_alone(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    live = EventLog(layout, fsync=True, max_bytes=1 << 20, max_age_s=3600)
    live.append(_events(3), ["a", "b", "c"])[0].result(timeout=10)
    layout.landing_open.mkdir(parents=True, exist_ok=True)
    dead = layout.landing_open / "deadwriter-000001.jsonl"
    dead.write_bytes(b'{"seq": 1}\n{"seq": 2}\n{"seq": 3, "user_id": "tor')  # killed mid-write: never acknowledged
    empty = layout.landing_open / "deadwriter2-000001.jsonl"
    empty.write_bytes(b'{"torn')
    sealed = seal_orphans(layout)
    assert [p.name for p in sealed] == ["deadwriter-000001.jsonl"]
    assert (layout.landing / dead.name).read_bytes() == b'{"seq": 1}\n{"seq": 2}\n'
    assert not empty.exists(), "a segment with nothing complete in it is dropped"
    # The live writer's segment is locked: still open, still its own.
    assert len(list(layout.landing_open.glob("*.jsonl"))) == 1
    live.close()
    assert len(list(layout.landing.glob("*.jsonl"))) == 2


def test_a_new_utc_day_starts_a_new_segment(tmp_path: Path, monkeypatch) -> None:
    import freshrec.core.eventlog as eventlog

    layout = Layout(tmp_path)
    log = EventLog(layout, fsync=False, max_bytes=1 << 20, max_age_s=3600)
    day1 = dt.datetime(2026, 3, 1, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    monkeypatch.setattr(eventlog.time, "time", lambda: day1)
    log.append(_events(2), ["a", "b"])[0].result(timeout=10)
    monkeypatch.setattr(eventlog.time, "time", lambda: day1 + 2)
    log.append(_events(1), ["c"])[0].result(timeout=10)
    monkeypatch.undo()
    log.close()
    segments = sorted(layout.landing.glob("*.jsonl"))
    assert [[e["event_id"] for e in _lines([p])] for p in segments] == [["a", "b"], ["c"]]
    assert [{e["ingested_at"][:10] for e in _lines([p])} for p in segments] == [{"2026-03-01"}, {"2026-03-02"}]


def test_a_segment_is_sealed_at_its_size_limit(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    log = EventLog(layout, fsync=False, max_bytes=1024, max_age_s=3600)
    for k in range(10):
        log.append(_events(5), [f"{k}-{j}" for j in range(5)])[0].result(timeout=10)
    log.close()
    segments = list(layout.landing.glob("*.jsonl"))
    assert len(segments) > 1 and all(os.path.getsize(p) < 1024 + 2000 for p in segments)
    assert sorted(e["seq"] for e in _lines(segments)) == list(range(1, 51))
