"""The Redis online store: one list per user (``<ns>:tail:<user_id>``) of encoded live events.

An append of any number of users is one pipelined round trip (RPUSH + LTRIM + PEXPIRE per user); a read
is one LRANGE on a lean connection of its own (freshrec.core.online.resp: half redis-py's CPU per command),
where the reads of concurrent requests pipeline. Trimming after a snapshot runs a server-side script per
key, so an entry appended while the trim runs is never lost. Production runs Redis with AOF (``appendfsync everysec``) behind Sentinel or
Cluster (infra/README.md); a tail lost with a Redis node only costs freshness, the log keeps the events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from freshrec.core.events import Watermark
from freshrec.core.online.base import LiveEvent, OnlineStore, StoreUnavailable, decode_entries
from freshrec.core.online.resp import RespConnection, RespError

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
        # Reads: one lean pipelined connection (freshrec.core.online.resp), one round trip per request.
        self._reader = RespConnection(url, timeout_s)
        self._slow = aioredis.Redis.from_url(url, socket_timeout=MAINTENANCE_TIMEOUT_S,
                                             socket_connect_timeout=MAINTENANCE_TIMEOUT_S)
        self._trim = self._slow.register_script(_TRIM)

    async def _call(self, coro):
        try:
            return await coro
        except (TimeoutError, RedisError, RespError, OSError) as exc:
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
        return decode_entries(await self._call(self._reader.execute(b"LRANGE", self._prefix + user_id,
                                                                    -self._tail_length, -1)))

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
        self._reader.close()
        await self._slow.aclose()
