"""The Redis store's client-side tail cache against real redis-server processes: repeated reads cost no round
trip, yet every change is seen: by the host epochs at once (read-your-writes across a host's workers), by
Redis's invalidations for writers elsewhere, and never through a read that a change overtook or a connection
that was lost."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
import redis

from freshrec.core.online.base import LiveEvent, StoreUnavailable
from freshrec.core.online.redis_store import RedisStore
from freshrec.core.online.tail_cache import HostEpochs, TailCache
from tests.online.conftest import REDIS_URL, Server

pytestmark = pytest.mark.skipif(not redis.Redis.from_url(REDIS_URL).ping(), reason="no redis at 127.0.0.1:6379")


def _event(seq: int, item: str) -> LiveEvent:
    return LiveEvent("w", seq, item, "click", 1.0, 1_000.0 + seq)


def _store(tmp_path: Path, namespace: str, epochs: str = "host-a", url: str = REDIS_URL) -> RedisStore:
    return RedisStore(url, namespace, tail_length=50, ttl_s=3600, timeout_s=1.0, cache_events=1000,
                      cache_max_age_s=60.0, epochs=tmp_path / epochs)


async def _items(store: RedisStore, user: str) -> list[str]:
    return [e.item_id for e in await store.tail(user)]


def test_a_repeated_read_is_a_hit_and_a_write_on_the_host_is_seen_at_once(tmp_path: Path) -> None:
    async def run() -> None:
        ns = f"test-{uuid.uuid4().hex[:10]}"
        writer, reader = _store(tmp_path, ns), _store(tmp_path, ns)  # two workers of one host
        try:
            await writer.append([("u1", _event(1, "a"))])
            for _ in range(3):  # the first read connects (and turns tracking on), the second fills the cache
                assert await _items(reader, "u1") == ["a"]
            assert reader.cache is not None and reader.cache.hits == 1
            # Redis's invalidation is switched off here: the host epochs alone must make the write visible.
            reader.cache.invalidate = lambda keys: None  # type: ignore[method-assign]
            await writer.append([("u1", _event(2, "b"))])
            assert await _items(reader, "u1") == ["a", "b"]
            assert await _items(reader, "u2") == []
            await writer.append([("u2", _event(3, "c"))])
            assert await _items(reader, "u2") == ["c"]
        finally:
            await writer.close()
            await reader.close()

    asyncio.run(run())


def test_a_write_from_another_host_arrives_by_invalidation(tmp_path: Path) -> None:
    async def run() -> None:
        ns = f"test-{uuid.uuid4().hex[:10]}"
        here, elsewhere = _store(tmp_path, ns, "host-a"), _store(tmp_path, ns, "host-b")
        try:
            await elsewhere.append([("u1", _event(1, "a"))])
            for _ in range(3):
                assert await _items(here, "u1") == ["a"]
            assert here.cache is not None and here.cache.hits == 1
            await elsewhere.append([("u1", _event(2, "b"))])  # bumps host-b's epochs, not host-a's
            started = time.monotonic()
            while (seen := await _items(here, "u1")) != ["a", "b"]:
                assert seen == ["a"] and time.monotonic() - started < 1.0, seen
                await asyncio.sleep(0.001)
            # and the same for a writer that is not FreshRec at all, and for a deleted key
            redis.Redis.from_url(REDIS_URL).delete(f"{ns}:tail:u1")
            started = time.monotonic()
            while await _items(here, "u1"):
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.001)
        finally:
            await here.close()
            await elsewhere.close()
            redis.Redis.from_url(REDIS_URL).delete(f"{ns}:tail:u1")

    asyncio.run(run())


def test_a_restarted_redis_drops_the_cache(tmp_path: Path, server: Server) -> None:
    url = f"redis://:s3cret@127.0.0.1:{server.port}/0"

    async def run() -> None:
        store = _store(tmp_path, "ns", url=url)
        other = redis.Redis(port=server.port, password="s3cret")
        try:
            await store.append([("u1", _event(1, "a"))])
            for _ in range(3):
                assert await _items(store, "u1") == ["a"]
            assert store.cache is not None and store.cache.hits == 1
            server.kill()
            server.start()  # empty: no persistence
            other.rpush("ns:tail:u1", _event(5, "z").encode())  # not through FreshRec: no epoch moves
            await asyncio.sleep(0.05)  # the worker's loop sees its connections close, as a serving worker would
            started = time.monotonic()
            while True:
                try:
                    if await _items(store, "u1") == ["z"]:
                        break
                except StoreUnavailable:
                    pass  # a read on the dead connection fails; the next one reconnects
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.001)
            other.rpush("ns:tail:u1", _event(6, "y").encode())
            started = time.monotonic()
            while await _items(store, "u1") != ["z", "y"]:  # tracking is back on the new connection
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.001)
        finally:
            await store.close()

    asyncio.run(run())


class _Epochs(HostEpochs):
    def __init__(self) -> None:  # noqa: D107 - no file: a dict stands in for the shared table in the unit tests
        self.words: dict[int, int] = {}

    def read(self, bucket: int) -> int:
        return self.words.get(bucket, 0)


def test_a_read_overtaken_by_an_invalidation_is_not_cached() -> None:
    epochs = _Epochs()
    cache = TailCache(max_events=10, max_age_s=60, epochs=epochs)
    cache.reset(active=True)
    old = [_event(1, "a")]
    ticket = cache.ticket(b"k", 0)
    assert ticket is not None
    cache.invalidate([b"k"])  # the key changed after Redis answered but before the answer was handled
    cache.settle(ticket, old)
    assert cache.get(b"k", 0) is None
    ticket = cache.ticket(b"k", 0)
    cache.settle(ticket, old)  # type: ignore[arg-type]
    assert cache.get(b"k", 0) == old
    # an epoch moved by a writer of this host, a lost connection and the size bound each drop entries
    epochs.words[0] = 7
    assert cache.get(b"k", 0) is None
    cache.settle(cache.ticket(b"k", 0), old)  # type: ignore[arg-type]
    cache.reset(active=False)
    assert cache.get(b"k", 0) is None and cache.ticket(b"k", 0) is None
    cache.reset(active=True)
    for n in range(12):
        cache.settle(cache.ticket(f"u{n}".encode(), 0), [_event(n, "x")])  # type: ignore[arg-type]
    assert len(cache) == 10 and cache.get(b"u0", 0) is None and cache.get(b"u11", 0) is not None


def test_a_lost_subscriber_costs_no_read_and_tracking_comes_back(tmp_path: Path) -> None:
    async def run() -> None:
        ns = f"test-{uuid.uuid4().hex[:10]}"
        store = _store(tmp_path, ns)
        other = redis.Redis.from_url(REDIS_URL)
        try:
            await store.append([("u1", _event(1, "a"))])
            for _ in range(3):
                assert await _items(store, "u1") == ["a"]
            cache = store.cache
            assert cache is not None and cache.active and cache.hits == 1
            killed = other.client_kill_filter(_id=store._subscriber_id)  # noqa: SLF001 - the connection under test
            assert killed == 1
            await asyncio.sleep(0.05)
            assert not cache.active  # no invalidations can arrive: nothing is served from the cache
            other.rpush(f"{ns}:tail:u1", _event(2, "b").encode())
            assert await _items(store, "u1") == ["a", "b"]  # read from Redis, no error
            started = time.monotonic()
            while not cache.active:  # re-pointed at a new subscriber in the background
                assert time.monotonic() - started < 1.0
                await _items(store, "u1")
                await asyncio.sleep(0.005)
            hits = cache.hits
            for _ in range(3):
                assert await _items(store, "u1") == ["a", "b"]
            assert cache.hits > hits
            other.rpush(f"{ns}:tail:u1", _event(3, "c").encode())
            started = time.monotonic()
            while await _items(store, "u1") != ["a", "b", "c"]:  # invalidations flow to the new subscriber
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.001)
        finally:
            await store.close()
            other.delete(f"{ns}:tail:u1")

    asyncio.run(run())
