"""5x overload for ``freshrec bench faults``: one worker's capacity is measured (closed loop), then five times
that is offered open loop. Pass: every answer is a 200 or a 503 with Retry-After, the admitted (200)
p99 is within the serving SLO, the 503s come back in milliseconds, and the server still answers after.

The load generator is freshrec.tools.bench.loadgen's open loop, told apart by status: its latencies are
one array for every answer, and this scenario needs them per status (and whether a 503 carries
Retry-After). As there, a request that finds every connection busy waits in the generator and its latency
counts from its scheduled time: the server is charged for the queue it lets grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict, deque

import httpx
import numpy as np
import orjson

from freshrec.tools.bench.faults_traffic import HOST, judged
from freshrec.tools.bench.faults_world import FaultWorld
from freshrec.tools.bench.loadgen import closed_loop, encode_posts

OVERLOAD = 5.0
SHED_P99_MS = 10.0  # "503s come back in milliseconds"


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; reports (status, has Retry-After) per answer."""

    transport: asyncio.Transport

    def __init__(self, on_answer) -> None:  # noqa: ANN001 - callback(connection, status, retry_after)
        self._on_answer = on_answer
        self._buffer = bytearray()
        self.started_at = 0.0

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio's transport
        self.transport = transport

    def send(self, request: bytes, started_at: float) -> None:
        self.started_at = started_at
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._buffer[:end]).lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in head else 0
            if len(self._buffer) < end + 4 + length:
                return
            del self._buffer[:end + 4 + length]
            self._on_answer(self, int(head[9:12]), b"\r\nretry-after:" in head)


async def _open_loop(port: int, requests: list[bytes], rate: float, duration_s: float, connections: int) -> dict:
    """Request i is due at i / rate; returns latencies (ms) by status and how many 503s had Retry-After."""
    total = int(rate * duration_s)
    latencies: dict[int, list[float]] = defaultdict(list)
    retry_after: Counter = Counter()
    idle: deque[_Connection] = deque()
    backlog: deque[tuple[float, bytes]] = deque()
    done = asyncio.get_running_loop().create_future()

    def on_answer(conn: _Connection, status: int, has_retry_after: bool) -> None:
        latencies[status].append((time.perf_counter() - conn.started_at) * 1000)
        retry_after[status] += has_retry_after
        if sum(map(len, latencies.values())) == total and not done.done():
            done.set_result(None)
        if backlog:
            scheduled, request = backlog.popleft()
            conn.send(request, scheduled)
        else:
            idle.append(conn)

    loop = asyncio.get_running_loop()
    conns = [(await loop.create_connection(lambda: _Connection(on_answer), HOST, port))[1] for _ in range(connections)]
    idle.extend(conns)
    start = time.perf_counter() + 0.01
    for n in range(total):
        due = start + n / rate
        if due > time.perf_counter():
            await asyncio.sleep(due - time.perf_counter())
        request = requests[n % len(requests)]
        if idle:
            idle.popleft().send(request, time.perf_counter())
        else:
            backlog.append((due, request))
    with contextlib.suppress(TimeoutError):  # what is still unanswered then counts as such
        await asyncio.wait_for(asyncio.shield(done), 15)
    for conn in conns:
        conn.transport.close()
    answered = sum(map(len, latencies.values()))
    return {"sent": total, "unanswered": total - answered, "latencies": latencies, "retry_after": retry_after}


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _capacity(world: FaultWorld, requests: list[bytes]) -> float:
    """Requests/s one worker serves with shedding off (closed loop, 8 connections): the rate the overload
    multiplies. With shedding on, a closed loop would measure its own retry storm instead."""
    with world.serve(world.env(FRESHREC_SERVING__MAX_QUEUE_AGE_MS="0")) as server:
        asyncio.run(closed_loop(HOST, server.port, requests, 4, 1.0))  # warm-up
        closed = asyncio.run(closed_loop(HOST, server.port, requests, 8, 2.0))
    return round(closed.statuses[200] / closed.duration_s, 1)


def _unshed(world: FaultWorld, requests: list[bytes], rate: float, duration_s: float, connections: int) -> dict:
    """The same overload, shorter, with shedding by queue age off: what the in-flight limit alone does."""
    with world.serve(world.env(FRESHREC_SERVING__MAX_QUEUE_AGE_MS="0")) as server:
        asyncio.run(closed_loop(HOST, server.port, requests, 4, 1.0))  # warm-up
        return {"duration_s": duration_s, **_summary(asyncio.run(_open_loop(server.port, requests, rate, duration_s,
                                                                            connections)))}


def _summary(run: dict) -> dict:
    ok, shed = run["latencies"].get(200, []), run["latencies"].get(503, [])
    return {"sent": run["sent"], "unanswered": run["unanswered"],
            "statuses": {str(s): len(v) for s, v in run["latencies"].items()},
            "shed_with_retry_after": run["retry_after"][503], "admitted_share": round(len(ok) / max(1, run["sent"]), 3),
            "admitted_ms": {"p50": _pct(ok, 50), "p99": _pct(ok, 99), "max": _pct(ok, 100)},
            "shed_ms": {"p50": _pct(shed, 50), "p99": _pct(shed, 99)}}


def overload(world: FaultWorld, duration_s: float, slo_ms: float = 10.0, connections: int = 256) -> dict:
    """One worker (the product's default settings) at five times the rate it sustains; the same server at
    a fifth of that rate first, as the box's baseline (a shared box can miss the SLO unloaded)."""
    bodies = [orjson.dumps({"user_id": u, "k": 10}) for u in world.users]
    requests = encode_posts(HOST, "/v1/recommend", bodies)
    capacity = _capacity(world, requests)
    unshed = _unshed(world, requests, OVERLOAD * capacity, min(2.0, duration_s), connections)
    with world.serve() as server:
        asyncio.run(closed_loop(HOST, server.port, requests, 4, 1.0))  # warm-up
        baseline = asyncio.run(_open_loop(server.port, requests, capacity / OVERLOAD, min(2.0, duration_s), 16))
        run = asyncio.run(_open_loop(server.port, requests, OVERLOAD * capacity, duration_s, connections))
        after = httpx.post(f"http://{HOST}:{server.port}/v1/recommend", json={"user_id": world.users[0]}, timeout=10)
        alive = server.popen.poll() is None and after.status_code == 200
    ok, shed = run["latencies"].get(200, []), run["latencies"].get(503, [])
    result = {"capacity_rps": capacity, "offered_rps": round(OVERLOAD * capacity, 1), "duration_s": duration_s,
              "connections": connections, **_summary(run), "slo_p99_ms": slo_ms,
              "baseline_at_a_fifth_of_capacity": _summary(baseline), "without_age_shedding": unshed,
              "server_alive_after": alive}
    return judged(result, only_200_or_503=set(run["latencies"]) <= {200, 503} and not run["unanswered"],
                  shed_some=len(shed) > 0, every_503_has_retry_after=run["retry_after"][503] == len(shed),
                  admitted_p99_within_slo=bool(ok) and (_pct(ok, 99) or 0) <= slo_ms,
                  shed_p99_in_milliseconds=bool(shed) and (_pct(shed, 99) or 0) <= SHED_P99_MS, no_crash=alive)
