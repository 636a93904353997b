"""The Redis online store: one list per user (``<ns>:tail:<user_id>``) of encoded live events.

An append of any number of users is one pipelined round trip (RPUSH + LTRIM + PEXPIRE per user, packed by
hiredis and written at once); a read is one LRANGE. Both run on lean connections of their own
(freshrec.core.online.resp: half redis-py's CPU per command), where concurrent requests pipeline. Trimming
after a snapshot runs a server-side script per key, so an entry appended while the trim runs is never lost.
Tails read are cached in the worker until Redis says they changed (freshrec.core.online.tail_cache: CLIENT
TRACKING, plus host epochs for read-your-writes), so a user's repeated requests between two of their events
cost no round trip. Production runs Redis with AOF (``appendfsync everysec``) behind Sentinel or Cluster
(infra/README.md); a tail lost with a Redis node only costs freshness, the log keeps the events.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from freshrec.core.events import Watermark
from freshrec.core.online.base import LiveEvent, OnlineStore, StoreUnavailable, decode_entries
from freshrec.core.online.resp import RespConnection, RespError, Send
from freshrec.core.online.tail_cache import HostEpochs, TailCache, epochs_path

log = logging.getLogger(__name__)
INVALIDATIONS = "__redis__:invalidate"

# KEYS[1] the tail; ARGV[1] {writer: seq} as JSON, ARGV[2] until_ts. Entries are [writer, seq, item, type, value, ts].
_TRIM = """
local covered = cjson.decode(ARGV[1])
local until_ts = tonumber(ARGV[2])
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local keep, removed = {}, 0
for _, raw in ipairs(entries) do
  local e = cjson.decode(raw)
  local upto = covered[e[1]]
  if upto ~= nil and e[2] <= upto and e[6] < until_ts then removed = removed + 1 else keep[#keep + 1] = raw end
end
if removed > 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  if #keep > 0 then
    redis.call('RPUSH', KEYS[1], unpack(keep))
    if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
  end
end
return removed
"""
MAINTENANCE_TIMEOUT_S = 10.0
# A write of a 1,000-event batch is a pipeline of up to 3,000 commands: on a loaded box it can take longer
# than a read's budget, and a write timing out opens the breaker (ingestion refused), so writes get more room.
WRITE_TIMEOUT_S = 1.0


class RedisStore(OnlineStore):
    backend = "redis"

    def __init__(self, url: str, namespace: str, tail_length: int, ttl_s: float, timeout_s: float, *,
                 cache_events: int = 0, cache_max_age_s: float = 5.0, epochs: Path | None = None) -> None:
        self._prefix = f"{namespace}:tail:"
        self._claims = f"{namespace}:claim:"
        self._tail_length = tail_length
        self._ttl_ms = int(ttl_s * 1000)
        # Request-path calls fail fast (recommend falls back to the snapshot); maintenance may take longer.
        # Appends: a pipeline packed by hiredis and sent as one write on a lean connection of their own (a
        # 100-event batch is 300 commands: redis-py's per-command machinery cost more than Redis's work).
        self._writer = RespConnection(url, max(timeout_s, WRITE_TIMEOUT_S))
        # Reads: one lean pipelined connection (freshrec.core.online.resp), one round trip per request; with
        # the client-side cache on, a second connection receives the invalidations of what the first read.
        self._epochs: HostEpochs | None = None
        self._cache: TailCache | None = None
        self._subscriber: RespConnection | None = None
        self._subscriber_id: int | None = None
        self._redirecting: asyncio.Task | None = None
        if cache_events > 0:
            try:
                self._epochs = HostEpochs(epochs or epochs_path(url))
            except OSError as exc:  # e.g. a table another user created: correct without the cache, only slower
                log.warning("redis tail cache off: the host epochs table cannot be opened (%s)", exc)
        if self._epochs is not None:
            self._cache = TailCache(cache_events, cache_max_age_s, self._epochs)
            # The subscriber sends nothing on the request path: it gets a maintenance-sized timeout.
            self._subscriber = RespConnection(url, max(timeout_s, WRITE_TIMEOUT_S), on_connect=self._subscribe,
                                              on_push=self._invalidated, on_lost=self._subscriber_lost)
            self._reader = RespConnection(url, timeout_s, on_connect=self._track, on_lost=self._reader_lost)
        else:
            self._reader = RespConnection(url, timeout_s)
        self._slow = aioredis.Redis.from_url(url, socket_timeout=MAINTENANCE_TIMEOUT_S,
                                             socket_connect_timeout=MAINTENANCE_TIMEOUT_S)
        self._trim = self._slow.register_script(_TRIM)

    async def _call(self, coro):
        try:
            return await coro
        except (TimeoutError, RedisError, RespError, OSError) as exc:
            raise StoreUnavailable(f"redis online store: {type(exc).__name__}: {exc}") from exc

    # -- client-side cache plumbing (see freshrec.core.online.tail_cache) --
    async def _subscribe(self, send: Send) -> None:
        self._subscriber_id = int(await send("CLIENT", "ID"))
        await send("SUBSCRIBE", INVALIDATIONS)

    async def _track(self, send: Send) -> None:
        """A new read connection: tracking on, redirected to the subscriber, then the (empty) cache is live."""
        if self._cache is None or self._subscriber is None:
            return
        await self._subscriber.connect()  # learns its client id
        subscriber = self._subscriber_id
        try:
            await send("CLIENT", "TRACKING", "ON", "REDIRECT", subscriber)
        except RespError as exc:  # e.g. an ACL without CLIENT: serve uncached rather than not at all
            log.warning("redis client-side caching unavailable (%s); every tail read goes to redis", exc)
            self._cache = None
            self._subscriber.close()
            return
        self._activate(subscriber)

    def _activate(self, subscriber: int | None) -> None:
        """The cache goes live only if the subscriber tracking points at is still the one connected."""
        if self._cache is not None and self._subscriber is not None and self._subscriber.connected \
                and subscriber is not None and subscriber == self._subscriber_id:
            self._cache.reset(active=True)

    def _invalidated(self, message: list) -> None:
        if self._cache is not None and message[1] == INVALIDATIONS.encode():
            self._cache.invalidate(message[2])

    def _reader_lost(self) -> None:
        if self._cache is not None:
            self._cache.reset(active=False)  # Redis dropped this connection's tracking with it

    def _subscriber_lost(self) -> None:
        if self._cache is not None:
            self._cache.reset(active=False)  # invalidations go nowhere until tracking points at a new subscriber

    async def _redirect(self) -> None:
        """Tracking on the live read connection, pointed at a (new) subscriber; then the cache is live again."""
        if self._cache is None or self._subscriber is None:
            return
        try:
            await self._reader.connect()
            await self._subscriber.connect()
            subscriber = self._subscriber_id
            if subscriber is not None:
                await self._reader.execute("CLIENT", "TRACKING", "ON", "REDIRECT", subscriber)
                self._activate(subscriber)
        except RespError as exc:
            log.debug("tail cache stays off for now: %s", exc)  # the next read tries again
        finally:
            self._redirecting = None

    @property
    def cache(self) -> TailCache | None:
        return self._cache

    def cache_stats(self) -> dict | None:
        cache = self._cache
        if cache is None:
            return None
        return {"active": cache.active, "hits": cache.hits, "misses": cache.misses, "entries": len(cache)}

    async def append(self, rows: Sequence[tuple[str, LiveEvent]]) -> None:
        by_user: dict[str, list[bytes]] = defaultdict(list)
        for user, event in rows:
            by_user[user].append(event.encode())
        commands: list[tuple] = []
        for user, entries in by_user.items():
            key = self._prefix + user
            commands += [("RPUSH", key, *entries), ("LTRIM", key, -self._tail_length, -1), ("PEXPIRE", key, self._ttl_ms)]
        await self._call(self._writer.pipeline(commands))
        if self._epochs is not None:  # after Redis has them, before the caller acknowledges anyone
            self._epochs.bump([(self._prefix + user).encode() for user in by_user])

    async def tail(self, user_id: str) -> list[LiveEvent]:
        key = (self._prefix + user_id).encode()
        cache = self._cache
        if cache is None:
            return decode_entries(await self._call(self._reader.execute(b"LRANGE", key, -self._tail_length, -1)))
        bucket = cache.bucket(key)
        if (cached := cache.get(key, bucket)) is not None:
            return cached
        if not cache.active and self._redirecting is None and self._reader.connected:
            self._redirecting = asyncio.create_task(self._redirect())
        ticket = cache.ticket(key, bucket)
        tail = None
        try:
            tail = decode_entries(await self._call(self._reader.execute(b"LRANGE", key, -self._tail_length, -1)))
            return tail
        finally:
            if ticket is not None:
                cache.settle(ticket, tail)

    async def trim(self, watermark: Watermark) -> int:
        if not watermark.writers:
            return 0
        covered = orjson.dumps(watermark.writers).decode()
        removed = 0
        async for key in self._slow.scan_iter(match=self._prefix + "*", count=1000):
            removed += int(await self._call(self._trim(keys=[key], args=[covered, repr(watermark.until_ts)])))
        return removed

    async def claim(self, name: str, ttl_s: float) -> bool:
        return bool(await self._call(self._slow.set(self._claims + name, b"1", nx=True, px=int(ttl_s * 1000))))

    async def ping(self) -> None:
        await self._call(self._writer.execute("PING"))

    async def close(self) -> None:
        self._writer.close()
        self._reader.close()
        if self._subscriber is not None:
            self._subscriber.close()
        if self._redirecting is not None:
            self._redirecting.cancel()
        if self._epochs is not None:
            self._epochs.close()
        await self._slow.aclose()
