"""Feedback events (clicks etc. from the traffic simulator or clients) appended to the raw lake.

Events are buffered in memory and flushed every ``settings.serving.feedback_flush_s`` to
``lake/raw/events/ds=D/feedback-<pid>.jsonl`` in the raw event schema (one file per day and process, so
several workers never interleave writes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections import defaultdict
from pathlib import Path

import orjson

from freshrec.layout import ds_name

log = logging.getLogger(__name__)
MAX_BUFFERED = 100_000


class FeedbackWriter:
    def __init__(self, raw_events: Path, flush_interval_s: float) -> None:
        self._raw_events = raw_events
        self._flush_interval_s = flush_interval_s
        self._buffer: list[dict] = []
        self.dropped = 0

    def append(self, user_id: str, item_id: str, event_type: str, value: float) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            self.dropped += 1  # the disk is not keeping up: bounded memory beats an OOM kill
            return
        now = dt.datetime.now(dt.UTC)
        self._buffer.append(
            {"user_id": user_id, "item_id": item_id, "event_type": event_type, "value": float(value),
             "ts": now.isoformat().replace("+00:00", "Z")}
        )

    def take(self) -> list[dict]:
        events, self._buffer = self._buffer, []
        return events

    def write(self, events: list[dict]) -> int:
        """Append events to their day's file (blocking I/O)."""
        by_day: dict[str, list[dict]] = defaultdict(list)
        for event in events:
            by_day[ds_name(dt.date.fromisoformat(event["ts"][:10]))].append(event)
        for day, rows in by_day.items():
            folder = self._raw_events / day
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / f"feedback-{os.getpid()}.jsonl").open("ab") as fh:
                fh.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        return len(events)

    async def flush(self) -> int:
        events = self.take()
        if not events:
            return 0
        try:
            return await asyncio.to_thread(self.write, events)
        except OSError:
            self._buffer[:0] = events  # keep them for the next flush
            raise

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval_s)
            try:
                await self.flush()
            except OSError:
                log.exception("feedback flush failed")
