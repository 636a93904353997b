"""What every online store backend offers, and the one encoding of a live-tail entry they share."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import NamedTuple

import orjson

from freshrec.core.errors import Overloaded
from freshrec.core.events import Watermark


class StoreUnavailable(Overloaded):
    """The online store did not answer in time; the caller may retry later (503 + Retry-After)."""

    def __init__(self, message: str = "the online store is unavailable, retry later", *, retry_after_s: float = 1.0) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class LiveEvent(NamedTuple):
    """One entry of a user's live tail: where it sits in the log (writer, seq) and what it says."""

    writer: str
    seq: int
    item_id: str
    event_type: str
    value: float
    ts: float  # epoch seconds

    def encode(self) -> bytes:
        return orjson.dumps(tuple(self))


def decode_entries(entries: Sequence[bytes]) -> list[LiveEvent]:
    """Entries as stored (JSON arrays), parsed in one call: a tail of hundreds costs one parse, not hundreds."""
    if not entries:
        return []
    return [LiveEvent(*row) for row in orjson.loads(b"[" + b",".join(entries) + b"]")]


class OnlineStore(abc.ABC):
    """Live tails keyed by user. Every method raises :class:`StoreUnavailable` when the backend fails."""

    backend: str

    @abc.abstractmethod
    async def append(self, rows: Sequence[tuple[str, LiveEvent]]) -> None:
        """Add (user_id, event) rows; visible to every reader once this returns."""

    @abc.abstractmethod
    async def tail(self, user_id: str) -> list[LiveEvent]:
        """The user's newest ``tail_length`` entries, in append order (oldest first). One round trip."""

    @abc.abstractmethod
    async def trim(self, watermark: Watermark) -> int:
        """Drop the entries a published snapshot covers (and expired ones); returns how many went."""

    @abc.abstractmethod
    async def claim(self, name: str, ttl_s: float) -> bool:
        """True for exactly one caller per ``name`` (within ``ttl_s``): one worker does a shared chore."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the backend answers."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    def cache_stats(self) -> dict | None:
        """What a client-side cache of tails saved (hits, misses, entries), None where there is none."""
        return None
