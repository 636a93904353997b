"""POST /v1/events: check each event by the shared rule table, log it durably, make it visible.

Order of work for one request: body-level checks (nothing is accepted when the body itself is wrong), the
per-event rules (``freshrec.core.events``: a bad event is rejected with its reason, the good ones in the same
batch go on), one group-committed append to this process's log segment (``freshrec.core.eventlog``), and only
then the online store write. An event counts as accepted once it is in the log: a store failure after that
cannot lose it (it is re-applied to the store when it answers again, and the batch plane lands it from the
log either way). While the store is known to be down, requests are refused (503 + Retry-After) before
anything is logged, so a client's retry never makes a second copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable

import orjson

from freshrec.core.errors import FreshRecError, InvalidInput
from freshrec.core.eventlog import EventLog
from freshrec.core.events import EventRules, check_event
from freshrec.core.online import LiveEvent, StoreUnavailable
from freshrec.serving.live import LiveState
from freshrec.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)


class BadRequest(FreshRecError):
    """The body is not valid JSON."""

    http_status = 400


class PayloadTooLarge(FreshRecError):
    http_status = 413


class UnsupportedMediaType(FreshRecError):
    http_status = 415


class LogUnavailable(StoreUnavailable):
    """The ingestion log could not be written: nothing of the request was accepted."""


def parse_events_body(raw: bytes, content_type: str, max_events: int) -> list:
    """The events list of a body, or the body-level fault (400/413/415/422) with a message naming it."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {media or 'none'!r}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise InvalidInput("body: expected a JSON object {\"events\": [...]}")
    unknown = sorted(set(body) - {"events"})
    if unknown:
        raise InvalidInput(f"body: unknown field(s) {', '.join(unknown)}; only 'events' is allowed")
    events = body.get("events")
    if not isinstance(events, list):
        raise InvalidInput("events: expected a list of event objects")
    if not events:
        raise InvalidInput("events: at least one event is required")
    if len(events) > max_events:
        raise PayloadTooLarge(f"events: {len(events)} events in one request, at most {max_events} (serving.max_events_per_request)")
    return events


class Ingestor:
    def __init__(self, log: EventLog, live: LiveState, rules: EventRules, metrics: ServingMetrics) -> None:
        self._log = log
        self._live = live
        self._rules = rules
        self._metrics = metrics
        self._accepted = {kind: metrics.events_accepted.labels(kind) for kind in ("view", "click", "rating", "purchase")}

    async def ingest(self, events: list, known_item: Callable[[str], bool]) -> dict:
        """``{"accepted": N, "rejected": [{"index", "reason"}], "visible": bool}``."""
        received = time.perf_counter()
        if self._live.down:
            raise StoreUnavailable("the online store is down: events are not accepted until it answers (nothing was logged)")
        now = time.time()
        accepted, rejected = [], []
        for index, raw in enumerate(events):
            event, reason = check_event(raw, self._rules, now)
            if event is None:
                rejected.append({"index": index, "reason": reason})
                self._metrics.events_rejected.labels(reason).inc()
            else:
                accepted.append(event)
        if not accepted:
            return {"accepted": 0, "rejected": rejected, "visible": True}
        ids = [e.event_id or uuid.uuid4().hex for e in accepted]
        try:
            future, appended = self._log.append(accepted, ids)
            await asyncio.wrap_future(future)
        except Exception as exc:  # noqa: BLE001 - whatever the log thread hit, nothing was acknowledged
            self._metrics.log_errors.inc()
            # The client hears only that it failed: an OSError's text names the segment's absolute path.
            log.error("the ingestion log could not be written: %s", exc)
            raise LogUnavailable("the ingestion log could not be written; nothing was accepted, retry later") from exc
        rows = [(e.user_id, LiveEvent(appended.writer, appended.first_seq + i, e.item_id, e.event_type, e.value, e.ts))
                for i, e in enumerate(accepted)]
        visible = await self._live.append(rows)
        if visible and self._live.enabled:
            self._metrics.visible_seconds.observe(time.perf_counter() - received)
        by_type = Counter(e.event_type for e in accepted)
        for kind, count in by_type.items():
            self._accepted[kind].inc(count)
        unknown = sum(not known_item(e.item_id) for e in accepted)
        if unknown:
            self._metrics.unknown_items.inc(unknown)
        return {"accepted": len(accepted), "rejected": rejected, "visible": visible}
