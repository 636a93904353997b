"""Alembic: upgrade head, downgrade base, upgrade again; the migrations match the ORM models exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from freshrec.core.registry import database
from freshrec.core.registry.models import Base

TABLES = {"models", "versions", "artifacts", "metrics", "lineage", "aliases", "verdicts", "audit_log"}


def _round_trip(engine: Engine) -> None:
    assert database.current_revision(engine) is None
    database.upgrade(engine)
    assert database.current_revision(engine) == database.head_revision()
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"migrations and models disagree: {diff}"

    database.downgrade(engine, "base")
    assert database.current_revision(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())

    database.upgrade(engine)
    assert database.current_revision(engine) == database.head_revision()
    assert TABLES <= set(inspect(engine).get_table_names())
    database.upgrade(engine)  # at head already: a no-op, not an error


def test_upgrade_downgrade_upgrade_sqlite(tmp_path: Path) -> None:
    engine = database.make_engine(f"sqlite:///{tmp_path / 'reg.db'}")
    _round_trip(engine)
    engine.dispose()


@pytest.mark.postgres
def test_upgrade_downgrade_upgrade_postgres(pg_schema_url: str) -> None:
    engine = database.make_engine(pg_schema_url)
    _round_trip(engine)
    engine.dispose()


def test_open_registry_creates_the_default_sqlite_file(freshrec_home: Path) -> None:
    from freshrec.core.registry import open_registry
    from freshrec.core.settings import get_settings

    with open_registry(get_settings()) as registry:
        assert registry.list_versions() == []
    assert (freshrec_home / "registry.db").is_file()
    # Opening again (another process, later) finds the schema at head and keeps the data.
    with open_registry(get_settings()) as registry:
        assert registry.generation() == 0


def test_concurrent_first_open_migrates_once(tmp_path: Path) -> None:
    """Scheduler, replicas and CLI may open a brand-new registry at the same moment."""
    from concurrent.futures import ThreadPoolExecutor

    from freshrec.core.registry import open_registry
    from freshrec.core.settings import load_settings

    settings = load_settings(home=tmp_path)

    def open_and_count(_: int) -> int:
        with open_registry(settings) as registry:
            return registry.generation()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(open_and_count, range(4))) == [0, 0, 0, 0]
    with open_registry(settings) as registry, registry.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM models").scalar_one() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM aliases").scalar_one() == 3


def test_first_connect_waits_out_a_writer_in_the_old_journal_mode(tmp_path: Path) -> None:
    """Switching a file to WAL while another connection writes in rollback mode fails at once in SQLite
    ("database is locked", no busy handler): the engine's first connect retries until the writer is done."""
    import sqlite3
    import threading

    path = tmp_path / "registry.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE held (x)")
    probe = sqlite3.connect(path, isolation_level=None, timeout=5)
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # what SQLite itself does
        probe.execute("PRAGMA journal_mode=WAL")
    probe.close()
    released = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    released.start()
    try:
        engine = database.make_engine(f"sqlite:///{path}")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("SELECT count(*) FROM held").scalar_one() == 0
        engine.dispose()
    finally:
        released.join()
        writer.close()


def test_in_memory_sqlite_url_works(tmp_path: Path) -> None:
    from freshrec.core.registry import open_registry
    from freshrec.core.settings import load_settings

    with open_registry(load_settings(home=tmp_path), url="sqlite://") as registry:
        assert registry.serving_state().champion is None
        assert database.current_revision(registry.engine) == database.head_revision()
