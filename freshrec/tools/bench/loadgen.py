"""A lean HTTP/1.1 keep-alive load generator on asyncio (uvloop): open-loop constant rate and closed loop.

Open loop: request i is *scheduled* at t0 + i / rate whether or not earlier answers came back. When a
connection is free it goes out at once and its latency counts from the send; when every connection is
busy it waits in the generator and its latency counts from its scheduled time, so waiting caused by a
slow server is charged to the server (no coordinated omission) while the generator's own timer
lateness (coarse timers on a shared box) is reported separately as ``send_lag``. Closed loop: each connection
sends its next request as soon as the previous answer arrives (single-stream latency, max throughput).
Requests are pre-encoded bytes and responses are parsed only as far as status, Content-Length and whether a
Retry-After header came back (what an overload test checks of a 503).
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
_RETRY_AFTER = re.compile(rb"(?i)\r\nretry-after:")


def encode_posts(host: str, path: str, bodies: list[bytes]) -> list[bytes]:
    return [
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), host.encode(), len(body), body)
        for body in bodies
    ]


@dataclass
class LoadResult:
    mode: str
    offered_rate: float | None
    duration_s: float
    latencies_ms: np.ndarray
    statuses: Counter = field(default_factory=Counter)
    unfinished: int = 0
    send_lag_ms: np.ndarray | None = None
    codes: np.ndarray | None = None  # each answer's HTTP status, aligned with latencies_ms
    retry_after: Counter = field(default_factory=Counter)  # per status, the answers that carried Retry-After

    def latencies_of(self, status: int) -> np.ndarray:
        """The latencies (ms) of the answers with this status."""
        return self.latencies_ms[self.codes == status] if self.codes is not None else np.empty(0)

    def summary(self) -> dict:
        lat = self.latencies_ms
        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: None)
        return {
            "mode": self.mode,
            "offered_rate": self.offered_rate,
            "achieved_rate": round(lat.size / self.duration_s, 1),
            "requests": int(lat.size),
            "non_2xx": int(lat.size - ok),
            "unfinished": self.unfinished,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "p999_ms": pct(99.9),
            "max_ms": float(lat.max()) if lat.size else None,
            **({"send_lag_p99_ms": float(np.percentile(self.send_lag_ms, 99))}
               if self.send_lag_ms is not None and self.send_lag_ms.size else {}),
        }


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    transport: asyncio.Transport  # set by connection_made, before create_connection returns

    def __init__(self, on_response) -> None:
        self._on_response = on_response
        self._buffer = bytearray()
        self.started_at = 0.0
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def send(self, request: bytes, started_at: float) -> None:
        self.started_at = started_at
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            match = _CONTENT_LENGTH.search(buffer, 0, end + 2)
            length = int(match.group(1)) if match else 0
            total = end + 4 + length
            if len(buffer) < total:
                return
            status = int(buffer[9:12])
            retry_after = _RETRY_AFTER.search(buffer, 0, end + 2) is not None
            del buffer[:total]
            self._on_response(self, status, retry_after)


async def _connect(host: str, port: int, n: int, on_response) -> list[_Connection]:
    loop = asyncio.get_running_loop()
    made = [await loop.create_connection(lambda: _Connection(on_response), host, port) for _ in range(n)]
    return [protocol for _, protocol in made]


async def open_loop(host: str, port: int, requests: list[bytes], rate: float, duration_s: float,
                    connections: int = 64, drain_timeout_s: float = 10.0) -> LoadResult:
    total = max(1, int(rate * duration_s))
    latencies = np.empty(total, dtype=np.float64)
    codes = np.zeros(total, dtype=np.int16)
    send_lag = np.zeros(total, dtype=np.float64)
    statuses: Counter = Counter()
    retry_after: Counter = Counter()
    done = 0
    idle: deque[_Connection] = deque()
    backlog: deque[tuple[float, bytes]] = deque()
    finished = asyncio.get_running_loop().create_future()

    def on_response(conn: _Connection, status: int, has_retry_after: bool) -> None:
        nonlocal done
        latencies[done] = (time.perf_counter() - conn.started_at) * 1000
        codes[done] = status
        statuses[status] += 1
        retry_after[status] += has_retry_after
        done += 1
        if done == total and not finished.done():
            finished.set_result(None)
        if backlog:
            scheduled, request = backlog.popleft()
            conn.send(request, scheduled)
        else:
            idle.append(conn)

    conns = await _connect(host, port, connections, on_response)
    idle.extend(conns)
    start = time.perf_counter() + 0.01
    interval = 1.0 / rate
    sent = 0
    while sent < total:
        due = start + sent * interval
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
            now = time.perf_counter()
        # Timers are coarse: send everything due by now, each stamped with its own scheduled time.
        while sent < total and start + sent * interval <= now:
            scheduled = start + sent * interval
            request = requests[sent % len(requests)]
            if idle:
                send_lag[sent] = (now - scheduled) * 1000
                idle.popleft().send(request, now)
            else:
                backlog.append((scheduled, request))
            sent += 1
    try:
        await asyncio.wait_for(asyncio.shield(finished), drain_timeout_s)
    except TimeoutError:
        pass
    for conn in conns:
        conn.transport.close()
    return LoadResult("open", rate, duration_s, latencies[:done].copy(), statuses, total - done, send_lag,
                      codes[:done].copy(), retry_after)


async def closed_loop(host: str, port: int, requests: list[bytes], connections: int, duration_s: float) -> LoadResult:
    latencies: list[float] = []
    codes: list[int] = []
    statuses: Counter = Counter()
    retry_after: Counter = Counter()
    sent = 0
    active = connections
    stop_at = time.perf_counter() + duration_s  # re-set once connected
    finished = asyncio.get_running_loop().create_future()

    def on_response(conn: _Connection, status: int, has_retry_after: bool) -> None:
        nonlocal sent, active
        now = time.perf_counter()
        latencies.append((now - conn.started_at) * 1000)
        codes.append(status)
        statuses[status] += 1
        retry_after[status] += has_retry_after
        if now < stop_at:
            sent += 1
            conn.send(requests[sent % len(requests)], now)
            return
        active -= 1
        if active == 0 and not finished.done():
            finished.set_result(None)

    conns = await _connect(host, port, connections, on_response)
    start = time.perf_counter()
    stop_at = start + duration_s
    for conn in conns:
        sent += 1
        conn.send(requests[sent % len(requests)], time.perf_counter())
    await asyncio.wait_for(finished, duration_s + 30)
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.transport.close()
    return LoadResult("closed", None, elapsed, np.asarray(latencies), statuses,
                      codes=np.asarray(codes, dtype=np.int16), retry_after=retry_after)


async def interleaved_single_stream(host: str, ports: dict[str, int], requests: list[bytes], duration_s: float,
                                    seed: int = 0) -> dict[str, LoadResult]:
    """Single-stream latency of several servers at once, request by request: each request goes to every server
    in turn (a fresh random order per request), one request in flight in all. A burst of load from the box's
    other tenants, which lasts far longer than a request, then hits every server alike, where rounds of
    seconds per server leave one side a burst the other does not see. The servers' latencies are compared
    on the same requests, the same moments and the same client."""
    names = list(ports)
    rng = np.random.default_rng(seed)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    statuses: dict[str, Counter] = {name: Counter() for name in names}
    pending: list[str] = []  # the servers the current request has still to go to
    request = 0
    stop_at = time.perf_counter() + duration_s
    finished = asyncio.get_running_loop().create_future()
    conns: dict[str, _Connection] = {}

    def send_next(now: float) -> None:
        nonlocal request
        if not pending:
            if now >= stop_at:
                if not finished.done():
                    finished.set_result(None)
                return
            request += 1
            pending.extend(names[i] for i in rng.permutation(len(names)))
        conns[pending.pop()].send(requests[request % len(requests)], time.perf_counter())

    def on_response(name: str, conn: _Connection, status: int, has_retry_after: bool) -> None:
        now = time.perf_counter()
        latencies[name].append((now - conn.started_at) * 1000)
        statuses[name][status] += 1
        send_next(now)

    for name in names:
        conns[name] = (await _connect(host, ports[name], 1, functools.partial(on_response, name)))[0]
    start = time.perf_counter()
    stop_at = start + duration_s
    send_next(start)
    await asyncio.wait_for(finished, duration_s + 30)
    elapsed = time.perf_counter() - start
    for conn in conns.values():
        conn.transport.close()
    return {name: LoadResult("interleaved", None, elapsed, np.asarray(latencies[name]), statuses[name])
            for name in names}
