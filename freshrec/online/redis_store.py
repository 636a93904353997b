"""The Redis online store: one list per user (``<ns>:tail:<user_id>``) of encoded live events.

An append of any number of users is one pipelined round trip (RPUSH + LTRIM + PEXPIRE per user); a read
is one LRANGE, and the reads of concurrent requests share round trips: while one is on the wire, the next
ones queue and go together as one pipeline (redis-py costs ~50-100 us of CPU per lone command, ~10 per
pipelined one), the pattern of the scoring micro-batcher. Trimming after a snapshot runs a server-side script per key, so an entry appended while
the trim runs is never lost. Production runs Redis with AOF (``appendfsync everysec``) behind Sentinel or
Cluster (infra/README.md); a tail lost with a Redis node only costs freshness, the log keeps the events.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from freshrec.events import Watermark
from freshrec.online.base import LiveEvent, OnlineStore, StoreUnavailable, decode_entries

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

    def __init__(self, url: str, namespace: str, tail_length: int, ttl_s: float, timeout_s: float) -> None:
        self._prefix = f"{namespace}:tail:"
        self._claims = f"{namespace}:claim:"
        self._tail_length = tail_length
        self._ttl_ms = int(ttl_s * 1000)
        # Request-path calls fail fast (recommend falls back to the snapshot); maintenance may take longer.
        write_timeout = max(timeout_s, WRITE_TIMEOUT_S)
        self._client = aioredis.Redis.from_url(url, socket_timeout=write_timeout, socket_connect_timeout=timeout_s,
                                               retry_on_timeout=False, health_check_interval=0)
        # Reads: one connection, one round trip in flight, everything queued meanwhile in the next one.
        self._reader = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                               retry_on_timeout=False, health_check_interval=0,
                                               single_connection_client=True)
        self._reads: list[tuple[str, asyncio.Future]] = []
        self._reading = False
        self._slow = aioredis.Redis.from_url(url, socket_timeout=MAINTENANCE_TIMEOUT_S,
                                             socket_connect_timeout=MAINTENANCE_TIMEOUT_S)
        self._trim = self._slow.register_script(_TRIM)

    async def _call(self, coro):
        try:
            return await coro
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise StoreUnavailable(f"redis online store: {type(exc).__name__}: {exc}") from exc

    async def append(self, rows: Sequence[tuple[str, LiveEvent]]) -> None:
        by_user: dict[str, list[bytes]] = defaultdict(list)
        for user, event in rows:
            by_user[user].append(event.encode())
        pipe = self._client.pipeline(transaction=False)
        for user, entries in by_user.items():
            key = self._prefix + user
            pipe.rpush(key, *entries)
            pipe.ltrim(key, -self._tail_length, -1)
            pipe.pexpire(key, self._ttl_ms)
        await self._call(pipe.execute())

    async def tail(self, user_id: str) -> list[LiveEvent]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._reads.append((self._prefix + user_id, future))
        if not self._reading:
            self._reading = True
            loop.create_task(self._drain_reads())
        return decode_entries(await future)

    async def _drain_reads(self) -> None:
        try:
            while self._reads:
                batch, self._reads = self._reads, []
                try:
                    if len(batch) == 1:
                        results = [await self._call(self._reader.lrange(batch[0][0], -self._tail_length, -1))]
                    else:
                        pipe = self._reader.pipeline(transaction=False)
                        for key, _ in batch:
                            pipe.lrange(key, -self._tail_length, -1)
                        results = await self._call(pipe.execute())
                except StoreUnavailable as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), entries in zip(batch, results):
                    if not future.done():
                        future.set_result(entries)
        finally:
            self._reading = False

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
        await self._call(self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()
        await self._reader.aclose()
        await self._slow.aclose()
