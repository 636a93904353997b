"""The ingestion log: accepted events, durable before they are acknowledged, landed by the batch plane.

Each serving process is one *writer* with its own open segment (``lake/landing/events/_open/``), so
processes never interleave writes. Appends are group-committed: a commit thread writes every batch queued
since its last pass, fsyncs once and then settles all of them, so one fsync serves every concurrent request.
A segment is sealed (renamed into ``lake/landing/events/``, where the landing stream picks it up) at a size
or age limit, when the UTC day of ``ingested_at`` changes (a sealed segment never spans two landing days)
and at shutdown. The writer holds an exclusive ``flock`` on its open segment while it lives: a segment
whose lock can be taken belongs to a dead writer, and :func:`seal_orphans` seals it, minus a torn last line
(a write that was never fsynced, hence never acknowledged).

Line format (JSON): event_id, user_id, item_id, event_type, value, ts, ingested_at (ISO-8601 UTC), writer, seq.
``seq`` counts a writer's events from 1, in log order.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import orjson

from freshrec.core.events import CleanEvent, iso_utc
from freshrec.core.layout import Layout

log = logging.getLogger(__name__)
SEGMENT_SUFFIX = ".jsonl"
_OPENING = ".opening"  # a segment being created: not yet locked, so the orphan sweep leaves it alone


def new_writer_id() -> str:
    """Unique per process lifetime (a restarted worker is a new writer with its own sequence)."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"
    return f"{host}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a batch went: its writer, the seq of its first event and when it was received."""

    writer: str
    first_seq: int
    ingested_at: float


class _Segment:
    def __init__(self, layout: Layout, writer: str, number: int, day: dt.date) -> None:
        self.name = f"{writer}-{number:06d}{SEGMENT_SUFFIX}"
        self.day = day
        self.opened_at = time.monotonic()
        self.size = 0
        layout.landing_open.mkdir(parents=True, exist_ok=True)
        opening = layout.landing_open / (self.name + _OPENING)
        self.fd = os.open(opening, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = layout.landing_open / self.name
        os.replace(opening, self.path)
        _fsync_dir(layout.landing_open)  # the segment's name is durable before any event in it is acknowledged

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += len(data)


def seal_file(path: Path, fd: int, landing: Path) -> Path | None:
    """Cut a torn last line, fsync, rename into the landing folder; an empty segment is removed instead.
    The caller holds the segment's lock through ``fd``."""
    size = os.fstat(fd).st_size
    if size:
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 1))
            if fh.read(1) != b"\n":  # a torn write: keep up to the last complete line
                fh.seek(0)
                data = fh.read()
                os.truncate(path, data.rfind(b"\n") + 1)
                size = data.rfind(b"\n") + 1
    if size == 0:
        path.unlink(missing_ok=True)
        return None
    os.fsync(fd)
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / path.name
    os.replace(path, target)
    _fsync_dir(landing)
    return target


def seal_orphans(layout: Layout) -> list[Path]:
    """Seal the open segments of writers that died (their lock is free); live writers' are left alone."""
    sealed: list[Path] = []
    if not layout.landing_open.is_dir():
        return sealed
    for path in sorted(layout.landing_open.glob(f"*{SEGMENT_SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # sealed by its writer meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    continue  # renamed and replaced while we waited
            except FileNotFoundError:
                continue
            target = seal_file(path, fd, layout.landing)
            if target is not None:
                sealed.append(target)
                log.info("sealed the orphan segment %s", path.name)
        finally:
            os.close(fd)
    return sealed


class EventLog:
    """One writer's log with group commit on a thread. ``append`` returns a future that settles once the
    events are written (and fsynced unless ``fsync`` is off): only then may they be acknowledged."""

    def __init__(self, layout: Layout, *, fsync: bool, max_bytes: int, max_age_s: float,
                 observe_fsync: Callable[[float], None] | None = None, writer: str | None = None) -> None:
        self.layout = layout
        self.writer = writer or new_writer_id()
        self._fsync = fsync
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._observe_fsync = observe_fsync
        self._cond = threading.Condition()
        self._pending: list[tuple[bytes, Future, dt.date]] = []
        self._seq = 0
        self._last_ingested = 0.0
        self._segment: _Segment | None = None
        self._segments = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="freshrec-eventlog", daemon=True)
        self._thread.start()

    def append(self, events: Sequence[CleanEvent], event_ids: Sequence[str]) -> tuple[Future, Appended]:
        """Queue events for the next group commit; their sequence numbers are fixed here, in log order."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the event log is closed")
            # ingested_at never goes backwards within a writer, so neither does its landing day.
            now = max(time.time(), self._last_ingested)
            self._last_ingested = now
            first = self._seq + 1
            self._seq += len(events)
            stamp = iso_utc(now)
            lines = b"".join(
                orjson.dumps({"event_id": eid, "user_id": e.user_id, "item_id": e.item_id, "event_type": e.event_type,
                              "value": e.value, "ts": iso_utc(e.ts), "ingested_at": stamp, "writer": self.writer,
                              "seq": first + i}) + b"\n"
                for i, (e, eid) in enumerate(zip(events, event_ids))
            )
            self._pending.append((lines, future, dt.datetime.fromtimestamp(now, dt.UTC).date()))
            self._cond.notify()
        return future, Appended(self.writer, first, now)

    def close(self) -> None:
        """Commit what is queued, seal the open segment and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._closed:
                    self._cond.wait(timeout=1.0)
                batch, self._pending = self._pending, []
                closed = self._closed
            try:
                if batch:
                    self._commit(batch)
                self._maybe_rotate(closed)
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear about it
                log.exception("event log commit failed")
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                self._abandon_segment()
            if closed and not batch:
                return

    def _commit(self, batch: list[tuple[bytes, Future, dt.date]]) -> None:
        # A batch queued on a new UTC day goes to a new segment (the landing day follows ingested_at).
        runs: list[list[tuple[bytes, Future, dt.date]]] = []
        for item in batch:
            if runs and runs[-1][-1][2] == item[2]:
                runs[-1].append(item)
            else:
                runs.append([item])
        for run in runs:
            segment = self._segment_for(run[0][2])
            segment.write(b"".join(lines for lines, _, _ in run))
            if self._fsync:
                started = time.perf_counter()
                os.fdatasync(segment.fd)
                if self._observe_fsync is not None:
                    self._observe_fsync(time.perf_counter() - started)
            for _, future, _ in run:
                future.set_result(None)

    def _segment_for(self, day: dt.date) -> _Segment:
        if self._segment is not None and self._segment.day != day:
            self._seal()
        if self._segment is None:
            self._segments += 1
            self._segment = _Segment(self.layout, self.writer, self._segments, day)
        return self._segment

    def _maybe_rotate(self, closing: bool) -> None:
        segment = self._segment
        if segment is None:
            return
        today = dt.datetime.now(dt.UTC).date()
        if (closing or segment.size >= self._max_bytes or segment.day != today
                or time.monotonic() - segment.opened_at >= self._max_age_s):
            self._seal()

    def _seal(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        try:
            seal_file(segment.path, segment.fd, self.layout.landing)
        finally:
            os.close(segment.fd)

    def _abandon_segment(self) -> None:
        """After a failed write the segment may hold a partial line: release it to the orphan sweep
        (which cuts the torn line) and continue in a fresh segment."""
        segment, self._segment = self._segment, None
        if segment is not None:
            os.close(segment.fd)
