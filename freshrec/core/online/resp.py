"""The request path's Redis connection: commands pipelined on one socket, replies parsed by hiredis.

redis-py spends ~60 us of CPU on a lone LRANGE (command machinery, connection checkout, a task hop for
coalescing); the same command written straight to an asyncio transport and parsed by ``hiredis.Reader``
in ``data_received`` costs ~30 us, most of it the loopback round trip. On a request path whose uncached
p99 is ~0.4 ms that difference is the live-state overhead budget, so the tail read uses this connection;
writes, scripts and maintenance stay on redis-py. Packing (``hiredis.pack_command``), parsing and URL
handling (redis-py's ``parse_url``) are the libraries'; only the glue is here.

Commands pipeline naturally: each is written at once and its future queued; replies arrive in order.
A reply later than ``timeout_s`` fails every pending command and drops the connection (later replies
would be matched to the wrong futures); the next command reconnects.

Hooks for client-side caching (freshrec.core.online.tail_cache): ``on_connect`` runs each time a connection
is set up (after AUTH/SELECT), ``on_lost`` once when one becomes unusable, and ``on_push`` receives pub/sub
messages (a subscriber connection), which are not replies to any command.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url


def _pack(args: tuple[str | bytes | int | float, ...]) -> bytes:
    return hiredis.pack_command(args)  # type: ignore[arg-type]  # hiredis's stub types cmd as a 1-tuple


def _ssl_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    """rediss:// as redis-py reads it: certificates verified unless ``ssl_cert_reqs=none``; ``ssl_ca_certs``."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", str(int(ssl.CERT_NONE))):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RespError(Exception):
    """The connection failed, timed out or Redis answered with an error."""


class _Batch(list):
    """The replies of a pipeline collected so far, and how many it sent."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected


Send = Callable[..., Awaitable[Any]]  # send(*args): one command on the connection being set up, its reply


class _Protocol(asyncio.Protocol):
    def __init__(self, on_push: Callable[[list], None] | None = None, on_lost: Callable[[], None] | None = None) -> None:
        self.reader = hiredis.Reader()
        self.pending: deque[tuple[asyncio.Future, asyncio.TimerHandle, _Batch | None]] = deque()
        self.transport: asyncio.Transport | None = None
        self._on_push = on_push
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if self._on_push is not None and isinstance(reply, list) and reply and reply[0] == b"message":
                self._on_push(reply)
                continue
            if not self.pending:
                self.fail(RespError("redis sent a reply nobody asked for"))
                return
            future, timer, batch = self.pending[0]
            if batch is not None:  # a pipeline sent as one write: one future for all its replies
                batch.append(reply)
                if len(batch) < batch.expected:
                    continue
                reply = next((r for r in batch if isinstance(r, hiredis.ReplyError)), list(batch))
            self.pending.popleft()
            timer.cancel()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RespError(f"redis: {reply}"))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.fail(RespError(f"connection lost: {exc or 'closed by the server'}"))

    def fail(self, error: RespError) -> None:
        while self.pending:
            future, timer, _ = self.pending.popleft()
            timer.cancel()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        if self._on_lost is not None:
            on_lost, self._on_lost = self._on_lost, None  # once per connection
            on_lost()


class RespConnection:
    """One pipelined connection to the Redis server named by ``url`` (redis://, rediss://, unix://)."""

    def __init__(self, url: str, timeout_s: float, *, on_connect: Callable[[Send], Awaitable[None]] | None = None,
                 on_push: Callable[[list], None] | None = None, on_lost: Callable[[], None] | None = None) -> None:
        self._options = parse_url(url)
        self._timeout_s = timeout_s
        self._on_connect = on_connect
        self._on_push = on_push
        self._on_lost = on_lost
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def execute(self, *args: str | bytes | int | float) -> object:
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        return await self._send(protocol, _pack(args))

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.transport is not None

    async def connect(self) -> None:
        """Connect now (if not connected): the ``on_connect`` hook has run when this returns."""
        if self._protocol is None or self._protocol.transport is None:
            await self._connect()

    async def pipeline(self, commands: list[tuple[str | bytes | int | float, ...]]) -> list:
        """Send ``commands`` in one write; their replies in order. An error reply fails the whole call (after
        every reply has arrived, so the connection stays in step)."""
        if not commands:
            return []
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        return await self._send(protocol, b"".join(map(_pack, commands)), _Batch(len(commands)))

    def _send(self, protocol: _Protocol, packed: bytes, batch: _Batch | None = None) -> asyncio.Future:
        transport = protocol.transport
        if transport is None:  # lost while a handshake command was awaited
            raise RespError("connection lost")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        timer = loop.call_later(self._timeout_s, protocol.fail, RespError(f"no reply within {self._timeout_s:g} s"))
        protocol.pending.append((future, timer, batch))
        transport.write(packed)
        return future

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and self._protocol.transport is not None:
                return self._protocol
            self._protocol = None
            try:
                protocol = await asyncio.wait_for(self._open(), self._timeout_s)
            except TimeoutError as exc:
                raise RespError(f"cannot connect within {self._timeout_s:g} s") from exc
            try:
                options = self._options
                if options.get("password") is not None:
                    credentials = [options["username"]] if options.get("username") else []
                    await self._send(protocol, _pack(("AUTH", *credentials, options["password"])))
                if options.get("db"):
                    await self._send(protocol, _pack(("SELECT", int(options["db"]))))
                if self._on_connect is not None:
                    await self._on_connect(lambda *args: self._send(protocol, _pack(args)))
            except BaseException:
                protocol.fail(RespError("handshake failed"))
                raise
            self._protocol = protocol
            return protocol

    def _protocol_factory(self) -> _Protocol:
        return _Protocol(self._on_push, self._on_lost)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        options = self._options
        kind = options.get("connection_class")
        try:
            if kind is UnixDomainSocketConnection:
                _, protocol = await loop.create_unix_connection(self._protocol_factory, options["path"])
            else:
                context = _ssl_context(options) if kind is SSLConnection else None
                _, protocol = await loop.create_connection(self._protocol_factory, options.get("host", "localhost"),
                                                           int(options.get("port", 6379)), ssl=context)
        except OSError as exc:
            raise RespError(f"cannot connect: {exc}") from exc
        return protocol

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.fail(RespError("closed"))
            self._protocol = None
