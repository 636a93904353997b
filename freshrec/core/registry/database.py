"""Engines and schema migrations for the registry database (SQLite by default, Postgres in production).

Migrations run programmatically (Alembic with a Config built in code) under a lock, so several
processes opening a fresh registry at once (scheduler, serving replicas, CLI) migrate it exactly once.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from freshrec.core.sqlite_wal import enable_wal

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# An arbitrary, fixed key for pg_advisory_lock: "FRSHREG" in ASCII.
_PG_MIGRATION_LOCK = 0x465253485245_47
SQLITE_BUSY_TIMEOUT_S = 30.0


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL (readers never block the writer) and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    in_memory = not database or database == ":memory:"
    # An in-memory database lives in one connection; share it or every checkout sees an empty DB.
    pool = {"poolclass": StaticPool} if in_memory else {}
    engine = create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}, **pool
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI connection
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if not in_memory:
            enable_wal(cursor, SQLITE_BUSY_TIMEOUT_S)
        cursor.close()

    return engine


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; a no-op when it is already there."""
    if revision == "head" and current_revision(engine) == head_revision():
        return
    with _migration_lock(engine), engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    with _migration_lock(engine), engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK})
        return
    database = engine.url.database if backend == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(f"{database}.migrate.lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
