"""SQLite files in WAL mode (the registry, the embedded online store), switched safely under concurrency."""

from __future__ import annotations

import sqlite3
import time


def enable_wal(cursor: sqlite3.Cursor | sqlite3.Connection, timeout_s: float) -> None:
    """Switch the file to WAL (persistent in the file: once is enough).

    The switch needs the file to itself, and while another connection writes in the old journal mode (a
    concurrent first open migrating a brand-new registry) SQLite answers "database is locked" at once, without
    its busy handler. So the switch is retried, with backoff, for up to ``timeout_s``, like any other busy wait.
    """
    deadline, delay = time.monotonic() + timeout_s, 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
