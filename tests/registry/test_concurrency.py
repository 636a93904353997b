"""Compare-and-set under real concurrency: of two promotions racing, exactly one wins.

To make the race certain rather than likely, a third connection holds the lock on the model row while
both promotions start; they both read the same champion and generation, then queue on the lock. Once
both are queued the holder lets go: the first commits, the second re-checks its compare-and-set against
the committed row, matches nothing and raises Conflict.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text

from freshrec.core.errors import Conflict
from freshrec.core.registry import Registry, open_registry
from freshrec.core.settings import load_settings
from tests.registry.conftest import artifact_specs


def _setup_race(registry: Registry, bundle: Path) -> tuple[int, int, int]:
    champion = registry.register_candidate(bundle, artifact_specs(bundle), {}, {}, {}, "t").version
    registry.promote(champion, "t", "base")
    a = registry.register_candidate(bundle, artifact_specs(bundle), {}, {}, {}, "t").version
    b = registry.register_candidate(bundle, artifact_specs(bundle), {}, {}, {}, "t").version
    return champion, a, b


def _promote_in_thread(registry: Registry, version: int, outcomes: dict[int, str]) -> threading.Thread:
    def run() -> None:
        try:
            registry.promote(version, f"thread-{version}", "race")
            outcomes[version] = "won"
        except Conflict as exc:
            outcomes[version] = f"conflict: {exc.message}"

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _assert_exactly_one_won(registry: Registry, champion: int, outcomes: dict[int, str]) -> None:
    winners = [v for v, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    loser = next(v for v in outcomes if v not in winners)
    assert "concurrently" in outcomes[loser] or "no longer points" in outcomes[loser], outcomes
    state = registry.serving_state()
    assert state.champion.version == winners[0] and state.previous.version == champion
    assert registry.get_version(loser).state == "candidate"
    assert [v.version for v in registry.list_versions(["champion"])] == winners
    promotions = [e for e in registry.audit_log() if e.action == "promote" and e.after["state"] == "champion"]
    assert [e.version for e in promotions][-1] == winners[0] and len(promotions) == 2  # base + winner


def _hold_lock(engine: Engine, release: threading.Event, lock_sql: str) -> threading.Thread:
    """A connection that takes a lock with ``lock_sql`` and keeps it until ``release`` is set."""
    locked = threading.Event()

    def hold() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql(lock_sql)
            locked.set()
            release.wait(30)
            conn.exec_driver_sql("ROLLBACK")

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(10)
    return thread


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the racing writers never queued on the lock")
        time.sleep(0.05)


def _pg_waiters(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database() "
                 "AND query ILIKE 'UPDATE models%'")
        ).scalar_one()


@pytest.mark.postgres
def test_two_threads_promote_at_once_on_postgres(pg_registry: Registry, bundle: Path) -> None:
    champion, a, b = _setup_race(pg_registry, bundle)
    release = threading.Event()
    holder = _hold_lock(pg_registry.engine, release, "SELECT id FROM models FOR UPDATE")
    outcomes: dict[int, str] = {}
    racers = [_promote_in_thread(pg_registry, v, outcomes) for v in (a, b)]
    _wait_for(lambda: _pg_waiters(pg_registry.engine) >= 2)
    release.set()
    for thread in (*racers, holder):
        thread.join(30)
    _assert_exactly_one_won(pg_registry, champion, outcomes)


def _promote_in_process(url: str, home: str, version: int, results: multiprocessing.Queue) -> None:
    registry = open_registry(load_settings(home=home), url=url)
    try:
        registry.promote(version, f"process-{version}", "race")
        results.put((version, "won"))
    except Conflict as exc:
        results.put((version, f"conflict: {exc.message}"))
    finally:
        registry.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_promote_at_once_on_postgres(
    pg_registry: Registry, pg_schema_url: str, freshrec_home: Path, bundle: Path
) -> None:
    champion, a, b = _setup_race(pg_registry, bundle)
    release = threading.Event()
    holder = _hold_lock(pg_registry.engine, release, "SELECT id FROM models FOR UPDATE")
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    processes = [
        context.Process(target=_promote_in_process, args=(pg_schema_url, str(freshrec_home), v, results)) for v in (a, b)
    ]
    for process in processes:
        process.start()
    _wait_for(lambda: _pg_waiters(pg_registry.engine) >= 2, timeout=60)
    release.set()
    outcomes = dict(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(30)
    holder.join(30)
    _assert_exactly_one_won(pg_registry, champion, outcomes)


def test_two_threads_promote_at_once_on_sqlite(registry: Registry, bundle: Path) -> None:
    champion, a, b = _setup_race(registry, bundle)
    # A second engine on the same file holds SQLite's write lock; both racers read, then wait on it.
    blocker = create_engine(registry.engine.url, connect_args={"isolation_level": None})
    release = threading.Event()
    holder = _hold_lock(blocker, release, "BEGIN IMMEDIATE")
    # SQLite shows no lock queue to inspect: count the racers that reached their first write instead.
    writers_waiting: list[str] = []

    @event.listens_for(registry.engine, "before_cursor_execute")
    def _count_writers(conn, cursor, statement, *_):  # noqa: ANN001, ANN202 - SQLAlchemy event signature
        if statement.startswith("UPDATE models"):
            writers_waiting.append(statement)

    outcomes: dict[int, str] = {}
    racers = [_promote_in_thread(registry, v, outcomes) for v in (a, b)]
    _wait_for(lambda: len(writers_waiting) >= 2)
    assert outcomes == {}
    release.set()
    for thread in (*racers, holder):
        thread.join(60)
    event.remove(registry.engine, "before_cursor_execute", _count_writers)
    blocker.dispose()
    _assert_exactly_one_won(registry, champion, outcomes)


def test_expected_generation_guards_a_stale_reader(registry: Registry, bundle: Path) -> None:
    champion, a, b = _setup_race(registry, bundle)
    seen = registry.serving_state().generation
    registry.promote(a, "t", "first writer")
    with pytest.raises(Conflict, match="generation"):
        registry.promote(b, "t", "stale writer", expected_generation=seen)
    assert registry.serving_state().champion.version == a


def test_many_writers_keep_the_invariants(registry: Registry, bundle: Path) -> None:
    """Unsynchronised writers: whatever interleaving happens, aliases, states and audit agree."""
    versions = [registry.register_candidate(bundle, artifact_specs(bundle), {}, {}, {}, "t").version for _ in range(6)]
    outcomes: dict[int, str] = {}
    threads = [_promote_in_thread(registry, v, outcomes) for v in versions]
    for thread in threads:
        thread.join(60)
    winners = [v for v, o in outcomes.items() if o == "won"]
    assert winners and len(outcomes) == len(versions)
    champions = registry.list_versions(["champion"])
    assert len(champions) == 1 and registry.serving_state().champion.version == champions[0].version
    assert registry.generation() == len(winners)
    assert len(registry.list_versions(["archived"])) == len(winners) - 1
