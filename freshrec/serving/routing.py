"""Sticky canary routing and the immutable routing table requests read.

A user's bucket is a stable hash of the user id (blake2b, not Python's per-process salted ``hash``), so
every replica sends a user to the same variant and a weight change only moves the buckets at the edge.
The reconciler swaps whole tables by one reference assignment: a request keeps the table it started with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from freshrec.serving.versions import ServedVersion

BUCKETS = 10_000
CHAMPION, CANARY = "champion", "canary"


def bucket_of(user_id: str) -> int:
    digest = hashlib.blake2b(user_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def in_canary(user_id: str, weight_percent: float) -> bool:
    return bucket_of(user_id) < round(weight_percent * BUCKETS / 100)


@dataclass(frozen=True)
class RoutingTable:
    champion: ServedVersion | None = None
    canary: ServedVersion | None = None
    previous: ServedVersion | None = None
    canary_weight: float = 0.0
    shadow: bool = False
    generation: int = -1
    snapshot_name: str = ""
    faults: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.champion is not None

    def route(self, user_id: str) -> tuple[str, ServedVersion | None, ServedVersion | None]:
        """(variant, version answering, version shadow-scoring or None)."""
        if self.canary is not None and self.canary_weight > 0 and in_canary(user_id, self.canary_weight):
            if self.shadow:
                return CHAMPION, self.champion, self.canary
            return CANARY, self.canary, None
        return CHAMPION, self.champion, None

    def loaded(self) -> list[tuple[str, ServedVersion]]:
        roles = [(CHAMPION, self.champion), (CANARY, self.canary), ("previous", self.previous)]
        return [(role, served) for role, served in roles if served is not None]
