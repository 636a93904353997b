"""A pure-ASGI middleware timing every request into the latency histogram (per route, variant, version).

Pure ASGI rather than Starlette's BaseHTTPMiddleware: it adds a few microseconds, not tens. Handlers
name the variant and version that answered by setting ``scope[LABELS_KEY]``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

LABELS_KEY = "freshrec.labels"
ROUTES = {
    "/v1/recommend": "recommend",
    "/v1/score": "score",
    "/v1/feedback": "feedback",
    "/v1/events": "events",
    "/v1/models": "models",
    "/healthz": "healthz",
    "/readyz": "readyz",
    "/metrics": "metrics",
}
UNLABELLED = ("none", "none")
# (scope, raw body) -> (status, JSON payload, extra headers)
HotEntry = Callable[[dict, bytes], Awaitable[tuple[int, bytes, list[tuple[bytes, bytes]]]]]


class HotPath:
    """POSTs to the hot routes (/v1/recommend, /v1/score, /v1/feedback, /v1/events) answered in pure ASGI.

    Starlette's router, exception middleware, Request and Response objects cost about as much as the
    model call on a sub-millisecond request. The entries share their core with the FastAPI routes (which
    keep the OpenAPI schema and answer everything else) and build the same error bodies; unexpected
    exceptions still reach Starlette's error middleware (500).
    """

    TOO_LARGE = b'{"error":"PayloadTooLarge","message":"request body too large"}'

    def __init__(self, app: Any, entries: dict[str, HotEntry], max_body_bytes: int) -> None:
        self.app = app
        self._entries = entries
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        entry = self._entries.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if entry is None:
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                status, payload, extra = 413, self.TOO_LARGE, [(b"connection", b"close")]
                break
            chunks.append(chunk)
            if not message.get("more_body", False):
                status, payload, extra = await entry(scope, b"".join(chunks))
                break
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class MetricsMiddleware:
    def __init__(self, app: Any, runtime: Callable[[], Any]) -> None:
        self.app = app
        self._runtime = runtime

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            runtime = self._runtime()
            if runtime is not None:
                path = scope["path"]
                route = ROUTES.get(path) or ("admin" if path.startswith("/admin/") else "other")
                variant, version = scope.get(LABELS_KEY, UNLABELLED)
                latency, requests, errors = runtime.metrics.request_children(route, variant, version, status)
                latency.observe(time.perf_counter() - started)
                requests.inc()
                if errors is not None:
                    errors.inc()


class LoopLag:
    """How long work waits for the event loop, and what an admitted request costs it.

    A timer re-arms itself every ``tick_s``; a request's bytes and its task wait for the loop exactly as
    long as the timer does: it fires late by the length of the loop turns in front of it (inline scoring
    drains the whole batcher queue in one turn, so a deep queue shows here too). Like CoDel, only a
    *standing* wait counts: ``standing_s`` is the smallest lag of the last window (at least ``window_s``
    and two samples long), so one long pause (a GC after a hot swap) sheds nothing, while a loop that
    stays behind does. And only a wait of the loop's own making: a window in which the loop thread ran
    for less than ``BUSY_SHARE`` of the time (it waited for the GIL another thread held, or for a CPU
    other processes took) stands at 0, as shedding this worker's requests would not shorten it.

    ``cost_s`` is the loop thread's CPU time per request completed in a window (the smaller of the last
    two windows, so one pause does not count), kept as it was through windows of fewer than
    ``MIN_COMPLETIONS`` (a few requests would carry the timer's own cost, and while everything is shed
    nothing completes: the estimate must not fall to zero then). CPU time, not wall time: waiting for
    the GIL held by another thread is not work the requests brought. With it, the wait of a request
    behind those admitted in the same loop turn is known *before* the turn that runs them all, which
    the lag only shows afterwards.
    """

    MIN_COMPLETIONS = 4
    BUSY_SHARE = 0.5

    def __init__(self, window_s: float, tick_s: float = 0.001) -> None:
        """Starts sampling on the running loop."""
        self.standing_s = self.cost_s = self._last_cost_s = 0.0
        self._window_s = window_s
        self._tick_s = tick_s
        self._loop = asyncio.get_running_loop()
        self._start_window(self._loop.time())
        self._arm(self._window_start)

    def now(self) -> float:
        return self._loop.time()

    def completed(self) -> None:
        self._completed += 1

    def _start_window(self, now: float) -> None:
        self._window_start, self._window_cpu = now, time.thread_time()
        self._window_min, self._samples, self._completed = math.inf, 0, 0

    def _arm(self, now: float) -> None:
        self._due = now + self._tick_s
        self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self._window_min, self._samples = min(self._window_min, max(0.0, now - self._due)), self._samples + 1
        if now - self._window_start >= self._window_s and self._samples >= 2:
            cpu = time.thread_time() - self._window_cpu
            self.standing_s = self._window_min if cpu >= self.BUSY_SHARE * (now - self._window_start) else 0.0
            if self._completed >= self.MIN_COMPLETIONS:
                cost = cpu / self._completed
                self.cost_s, self._last_cost_s = min(cost, self._last_cost_s or cost), cost
            self._start_window(now)
        self._arm(now)


class InFlightLimit:
    """Answers 503 + Retry-After up front, before reading the body, when the server is behind: once
    ``limit`` requests are in flight (memory stays bounded however many connections arrive), or while
    work waits, or would wait, longer than ``serving.max_queue_age_ms`` for the event loop
    (:class:`LoopLag`). The second acts before queues grow, so that an admitted request is not queued
    past the SLO and a shed one costs microseconds of work (``freshrec bench faults`` measures both
    at 5x capacity). Probes and /metrics are never shed."""

    EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
    FULL = b'{"error":"Overloaded","message":"too many requests in flight, retry later"}'
    BEHIND = b'{"error":"Overloaded","message":"requests are waiting too long to be served, retry later"}'
    OVERLOAD_HOLD_WINDOWS = 50  # one second at the default target

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self._limit = limit
        self._in_flight = 0
        self._max_age_s: float | None = None  # from the runtime's settings, on the first request
        self._lag: LoopLag | None = None
        self._admitted_this_turn = 0  # reset by a callback that runs at the start of the next loop turn
        self._overloaded_until = 0.0  # loop time

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        if self._in_flight >= self._limit:
            await self._shed(send, self.FULL)
            return
        if self._behind(scope):
            await self._shed(send, self.BEHIND)
            return
        self._in_flight += 1
        self._count_admission()
        try:
            await self.app(scope, receive, send)
        finally:
            self._in_flight -= 1
            if self._lag is not None:
                self._lag.completed()

    def _count_admission(self) -> None:
        if self._lag is not None:
            if not self._admitted_this_turn:
                asyncio.get_running_loop().call_soon(self._new_turn)
            self._admitted_this_turn += 1

    def _new_turn(self) -> None:
        self._admitted_this_turn = 0

    def _behind(self, scope: dict) -> bool:
        """Work waits past the target now (a standing lag). Then, for ``OVERLOAD_HOLD_WINDOWS`` more,
        also when it would for this request: the requests admitted ahead of it in this loop turn (inline
        scoring runs them together in the next one) must not cost more loop time than the target, or
        once the loop has caught up the backlog of the shedding period comes back as one long turn.
        Only then: a burst at ordinary load is what micro-batching is for, and it costs far less per
        request batched than the estimate says."""
        if self._max_age_s is None:
            self._max_age_s = self._configured_age_s(scope)
            # Four targets long: a few loop turns under load, dozens of samples when idle.
            self._lag = LoopLag(window_s=4 * self._max_age_s) if self._max_age_s > 0 else None
        lag = self._lag
        if lag is None:
            return False
        if lag.standing_s > self._max_age_s:
            self._overloaded_until = lag.now() + self.OVERLOAD_HOLD_WINDOWS * 4 * self._max_age_s
            return True
        return lag.now() < self._overloaded_until and self._admitted_this_turn * lag.cost_s > self._max_age_s

    @staticmethod
    def _configured_age_s(scope: dict) -> float:
        """The app (Starlette puts it in the scope) holds the runtime, and with it the serving settings."""
        runtime = getattr(scope["app"].state, "runtime", None)
        return runtime.settings.serving.max_queue_age_ms / 1000 if runtime is not None else 0.0

    @staticmethod
    async def _shed(send: Callable, body: bytes) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"retry-after", b"1"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
