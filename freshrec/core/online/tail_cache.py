"""Client-side caching of live tails read from Redis: a repeated read of an unchanged tail costs no round trip.

Two mechanisms decide when a cached tail may be used, and either alone is enough to drop it:

- **Redis invalidation** (``CLIENT TRACKING`` in default mode, replies redirected to a subscriber
  connection of the same worker): Redis remembers which tails this worker read and sends the key as soon as
  anything changes it (an append by any worker or replica, a trim, an expiry, a flush). This is what keeps
  replicas on other hosts fresh: a cached tail lives until Redis says it changed, typically well under a
  millisecond after the write, and never longer than ``max_age_s``.
- **Host epochs** (read-your-writes, guaranteed on one host): an invalidation travels on its own socket and
  could in principle arrive after the writer's acknowledgement reached the user and their next request
  reached another worker. So every worker of a host shares a small memory-mapped table of epochs (one
  64-bit word per bucket of users). A writer stores a fresh random value in the buckets of the users it
  appended *after* Redis acknowledged the append and *before* it acknowledges the client; a reader notes the
  bucket's value *before* it sends the read and uses a cached tail only while the value is unchanged. Any
  append acknowledged before a request started is therefore either in the cached tail (it landed before the
  read that filled it) or has changed the epoch (a miss). Writes are plain aligned 8-byte stores of random
  values, so no lock is needed: a lost race between two writers still leaves a value the reader never saw.

A read that an invalidation overtakes (the key changed while the read was in flight) is not cached, and a
lost tracking or subscriber connection drops every entry: Redis forgets what it was tracking then.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import tempfile
import time
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from freshrec.core.online.base import LiveEvent

EPOCH_BUCKETS = 1 << 16  # 512 KiB per (store, namespace) and host


def epochs_path(url: str) -> Path:
    """One table per Redis deployment on this host (namespaces share it: callers bucket the full key), in
    shared memory where the OS has it."""
    folder = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    digest = hashlib.sha256(url.encode()).hexdigest()[:20]
    return folder / f"freshrec-tail-epochs-{digest}"


class HostEpochs:
    """The epochs table every worker of a host maps (see the module docstring)."""

    def __init__(self, path: Path, buckets: int = EPOCH_BUCKETS) -> None:
        size = buckets * 8
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # zero-filled; racing workers truncate to the same size
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._words = np.frombuffer(self._map, dtype=np.uint64)
        self._mask = buckets - 1
        self._rng = np.random.default_rng()

    def bucket(self, key: bytes) -> int:
        return zlib.crc32(key) & self._mask

    def read(self, bucket: int) -> int:
        return int(self._words[bucket])

    def bump(self, keys: list[bytes]) -> None:
        buckets = np.fromiter((self.bucket(k) for k in keys), dtype=np.int64, count=len(keys))
        self._words[buckets] = self._rng.integers(1, np.iinfo(np.uint64).max, size=len(buckets), dtype=np.uint64,
                                                  endpoint=True)

    def close(self) -> None:
        del self._words
        self._map.close()


class Ticket(NamedTuple):
    key: bytes
    generation: int
    epoch: int
    taken: float


class TailCache:
    """Decoded tails by key, bounded by the number of events held; valid only while tracking is on."""

    def __init__(self, max_events: int, max_age_s: float, epochs: HostEpochs) -> None:
        self._max_events = max_events
        self._max_age_s = max_age_s
        self._epochs = epochs
        self._entries: dict[bytes, tuple[int, int, float, list[LiveEvent]]] = {}  # key -> generation, epoch, taken, tail
        self._held = 0
        self._inflight: dict[bytes, int] = {}  # key -> reads in flight
        self._overtaken: set[bytes] = set()  # keys invalidated while a read of them was in flight
        self.generation = 0
        self.active = False
        self.hits = 0
        self.misses = 0

    def bucket(self, key: bytes) -> int:
        return self._epochs.bucket(key)

    def get(self, key: bytes, bucket: int) -> list[LiveEvent] | None:
        entry = self._entries.get(key)
        if entry is not None:
            generation, epoch, taken, tail = entry
            if (generation == self.generation and epoch == self._epochs.read(bucket)
                    and time.monotonic() - taken < self._max_age_s):
                self.hits += 1
                return tail
            self._drop(key)
        self.misses += 1
        return None

    def ticket(self, key: bytes, bucket: int) -> Ticket | None:
        """Taken before the read is sent; None while tracking is off (the reply will not be cached)."""
        if not self.active:
            return None
        self._inflight[key] = self._inflight.get(key, 0) + 1
        return Ticket(key, self.generation, self._epochs.read(bucket), time.monotonic())

    def settle(self, ticket: Ticket, tail: list[LiveEvent] | None) -> None:
        """The read of ``ticket`` answered ``tail`` (None: it failed). Cached unless something overtook it."""
        key = ticket.key
        left = self._inflight.get(key, 1) - 1
        overtaken = key in self._overtaken
        if left > 0:
            self._inflight[key] = left
        else:
            self._inflight.pop(key, None)
            self._overtaken.discard(key)
        if tail is None or overtaken or ticket.generation != self.generation or not self.active:
            return
        self._drop(key)
        if len(tail) > self._max_events:
            return
        self._entries[key] = (ticket.generation, ticket.epoch, ticket.taken, tail)
        self._held += len(tail) or 1
        while self._held > self._max_events:
            self._drop(next(iter(self._entries)))  # the oldest entry (dicts keep insertion order)

    def invalidate(self, keys: list[bytes] | None) -> None:
        """Redis says these keys changed (None: everything, e.g. a flush)."""
        if keys is None:
            self.reset(active=self.active)
            return
        for key in keys:
            self._drop(key)
            if key in self._inflight:
                self._overtaken.add(key)

    def reset(self, *, active: bool) -> None:
        """Forget everything (a connection came or went); in-flight reads will not be cached."""
        self.generation += 1
        self.active = active
        self._entries.clear()
        self._held = 0
        self._overtaken.clear()

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._held -= len(entry[3]) or 1

    def __len__(self) -> int:
        return len(self._entries)
