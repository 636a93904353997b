"""A bounded TTL cache of rendered responses, keyed per (user, k, exclude_seen, variant, version).

The reconciler clears it whenever the routing table changes (new version, weight or snapshot), so a
cached answer never outlives the model or the user state it was computed from.
"""

from __future__ import annotations

import time
from collections.abc import Hashable


class ResultCache:
    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, bytes]] = {}

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0 and self._max_entries > 0

    def get(self, key: Hashable) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: Hashable, value: bytes) -> None:
        if len(self._entries) >= self._max_entries:
            # Insertion order approximates age: drop the oldest entry.
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (time.monotonic() + self._ttl_s, value)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
