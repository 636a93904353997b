"""The request path's lean Redis connection against real redis-server processes: URL forms (password, db,
unix socket), pipelining, error replies, timeouts and a server restarted under it."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
import redis

from freshrec.core.online.resp import RespConnection, RespError
from tests.helpers.net import free_port
from tests.online.conftest import Server

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def test_password_db_and_unix_socket_urls_read_what_redis_py_wrote(server: Server) -> None:
    redis.Redis(port=server.port, password="s3cret", db=2).rpush("tail:u1", b"a", b"b", b"c")

    async def run() -> None:
        tcp = RespConnection(f"redis://:s3cret@127.0.0.1:{server.port}/2", 1.0)
        unix = RespConnection(f"unix://:s3cret@{server.socket}?db=2", 1.0)
        wrong_db = RespConnection(f"redis://:s3cret@127.0.0.1:{server.port}/0", 1.0)
        assert await tcp.execute(b"LRANGE", "tail:u1", -2, -1) == [b"b", b"c"]
        assert await unix.execute(b"LRANGE", "tail:u1", 0, -1) == [b"a", b"b", b"c"]
        assert await wrong_db.execute(b"LRANGE", "tail:u1", 0, -1) == []
        with pytest.raises(RespError, match="WRONGPASS|invalid password"):
            await RespConnection(f"redis://:nope@127.0.0.1:{server.port}/0", 1.0).execute(b"PING")
        for connection in (tcp, unix, wrong_db):
            connection.close()

    asyncio.run(run())


def test_concurrent_commands_pipeline_and_an_error_reply_leaves_the_connection_usable(server: Server) -> None:
    client = redis.Redis(port=server.port, password="s3cret")
    for n in range(50):
        client.rpush(f"k{n}", *[str(n * 10 + i) for i in range(n % 4 + 1)])
    client.set("plain", "x")

    async def run() -> None:
        connection = RespConnection(f"redis://:s3cret@127.0.0.1:{server.port}", 1.0)
        replies = await asyncio.gather(*(connection.execute(b"LRANGE", f"k{n}", 0, -1) for n in range(50)))
        assert replies == [[str(n * 10 + i).encode() for i in range(n % 4 + 1)] for n in range(50)]
        with pytest.raises(RespError, match="WRONGTYPE"):
            await connection.execute(b"LRANGE", "plain", 0, -1)
        assert await connection.execute(b"LRANGE", "k3", 0, 0) == [b"30"]
        connection.close()

    asyncio.run(run())


def test_a_silent_server_times_out_every_pending_command() -> None:
    async def run() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)  # reads nothing, answers nothing

        port = free_port()
        listener = await asyncio.start_server(silent, "127.0.0.1", port)
        connection = RespConnection(f"redis://127.0.0.1:{port}", 0.2)
        started = time.monotonic()
        results = await asyncio.gather(*(connection.execute(b"PING") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RespError) and "no reply within" in str(r) for r in results)
        assert time.monotonic() - started < 1.5
        connection.close()
        listener.close()

    asyncio.run(run())


def test_a_restarted_server_fails_the_read_in_flight_then_reconnects(server: Server) -> None:
    async def run() -> None:
        connection = RespConnection(f"redis://:s3cret@127.0.0.1:{server.port}", 1.0)
        assert await connection.execute(b"PING") == b"PONG"
        server.kill()
        with pytest.raises(RespError):
            await connection.execute(b"PING")
        server.start()
        assert await connection.execute(b"PING") == b"PONG"
        connection.close()

    asyncio.run(run())
