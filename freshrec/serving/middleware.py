"""A pure-ASGI middleware timing every request into the latency histogram (per route, variant, version).

Pure ASGI rather than Starlette's BaseHTTPMiddleware: it adds a few microseconds, not tens. Handlers
name the variant and version that answered by setting ``scope[LABELS_KEY]``.
"""

from __future__ import annotations

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


class InFlightLimit:
    """Answers 503 + Retry-After up front once ``limit`` requests are in flight, before reading the body:
    memory stays bounded however many connections arrive. Probes and /metrics are never shed."""

    EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
    BODY = b'{"error":"Overloaded","message":"too many requests in flight, retry later"}'

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self._limit = limit
        self._in_flight = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        if self._in_flight >= self._limit:
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"retry-after", b"1"),
                (b"content-length", str(len(self.BODY)).encode())]})
            await send({"type": "http.response.body", "body": self.BODY})
            return
        self._in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._in_flight -= 1
