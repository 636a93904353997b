"""The embedded online store: one SQLite file (WAL) that every worker of a host opens.

Readers never wait for writers in WAL mode, and a commit is visible to every connection at once, which is
what read-your-writes across workers needs. Durability is not this file's job (the ingestion log has the
events), so it runs with ``synchronous=OFF``. Reads are a few microseconds and run on the caller's thread;
writes may wait for another process's lock and run on a worker thread, the appends of concurrent requests
grouped in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from freshrec.core.events import Watermark
from freshrec.core.online.base import LiveEvent, OnlineStore, StoreUnavailable, decode_entries
from freshrec.core.sqlite_wal import enable_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tail (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ns TEXT NOT NULL, user_id TEXT NOT NULL, writer TEXT NOT NULL, seq INTEGER NOT NULL,
    ts REAL NOT NULL, added REAL NOT NULL, entry BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tail_user ON tail (ns, user_id, id);
CREATE INDEX IF NOT EXISTS tail_writer ON tail (ns, writer, seq);
CREATE TABLE IF NOT EXISTS claims (name TEXT PRIMARY KEY, expires REAL NOT NULL);
"""
WRITE_LOCK_WAIT_MS = 5000  # another worker's write holds the file lock for well under a millisecond


class EmbeddedStore(OnlineStore):
    backend = "embedded"

    def __init__(self, path: Path, namespace: str, tail_length: int, ttl_s: float, timeout_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ns = namespace
        self._tail_length = tail_length
        self._ttl_s = ttl_s
        self._writer = self._connect(path, WRITE_LOCK_WAIT_MS)
        with self._writer:
            self._writer.executescript(_SCHEMA)
        self._reader = self._connect(path, max(1, int(timeout_s * 1000)))
        self._write_lock = threading.Lock()
        self._queued: list[tuple[list[tuple], asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    @staticmethod
    def _connect(path: Path, busy_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        enable_wal(conn, busy_ms / 1000)
        conn.execute("PRAGMA synchronous = OFF")
        return conn

    def _write(self, statements: list[tuple[str, Sequence]]) -> list[int]:
        """Run the statements in one transaction (a list of tuples = executemany); rows changed by each."""
        with self._write_lock:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                changed = []
                for sql, params in statements:
                    many = bool(params) and isinstance(params[0], tuple)
                    cursor = self._writer.executemany(sql, params) if many else self._writer.execute(sql, params)
                    changed.append(max(cursor.rowcount, 0))
                self._writer.execute("COMMIT")
                return changed
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):  # a closed connection cannot even say if it is in one
                    if self._writer.in_transaction:
                        self._writer.execute("ROLLBACK")
                raise StoreUnavailable(f"embedded online store: {exc}") from exc

    async def append(self, rows: Sequence[tuple[str, LiveEvent]]) -> None:
        # Group commit: while one transaction is on the worker thread, the appends of concurrent requests
        # queue and go together in the next one (a transaction and a thread hop each cost more than a row).
        now = time.time()
        future = asyncio.get_running_loop().create_future()
        self._queued.append(([(self._ns, user, e.writer, e.seq, e.ts, now, e.encode()) for user, e in rows], future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                values = [row for rows, _ in batch for row in rows]
                try:
                    await asyncio.to_thread(self._write, [(
                        "INSERT INTO tail (ns, user_id, writer, seq, ts, added, entry) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        values)])
                except Exception as exc:  # every waiter of the batch learns it; the flusher goes on
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # cancelled (shutdown): so are the waiters
                    for _, future in batch + self._queued:
                        future.cancel()
                    raise
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._flusher = None

    async def tail(self, user_id: str) -> list[LiveEvent]:
        try:
            rows = self._reader.execute(
                "SELECT entry FROM tail WHERE ns = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
                (self._ns, user_id, self._tail_length)).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"embedded online store: {exc}") from exc
        return decode_entries([r[0] for r in reversed(rows)])

    async def trim(self, watermark: Watermark) -> int:
        covered = [(self._ns, writer, seq, watermark.until_ts) for writer, seq in watermark.writers.items()]
        statements: list[tuple[str, Sequence]] = [
            ("DELETE FROM tail WHERE ns = ? AND added < ?", (self._ns, time.time() - self._ttl_s)),
            # Entries past a user's newest tail_length are never read again.
            ("DELETE FROM tail WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
             "(PARTITION BY user_id ORDER BY id DESC) AS n FROM tail WHERE ns = ?) WHERE n > ?)", (self._ns, self._tail_length)),
        ]
        if covered:
            statements.append(("DELETE FROM tail WHERE ns = ? AND writer = ? AND seq <= ? AND ts < ?", covered))
        return sum(await asyncio.to_thread(self._write, statements))

    async def claim(self, name: str, ttl_s: float) -> bool:
        now = time.time()
        _, inserted = await asyncio.to_thread(self._write, [
            ("DELETE FROM claims WHERE expires < ?", (now,)),
            ("INSERT OR IGNORE INTO claims (name, expires) VALUES (?, ?)", (f"{self._ns}:{name}", now + ttl_s)),
        ])
        return inserted == 1

    async def ping(self) -> None:
        try:
            self._reader.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"embedded online store: {exc}") from exc

    async def close(self) -> None:
        self._reader.close()
        with self._write_lock:
            self._writer.close()
