"""The online store: each user's live tail (events since the snapshot), shared by every worker and replica.

Backends sit behind :class:`OnlineStore` and are chosen by ``settings.online.store_url``: Redis when a URL
is configured (the production component), else an embedded SQLite file under FRESHREC_HOME that every
worker of one host shares. Both pass the same tests (tests/online). The store is a projection of the
ingestion log, which stays the source of truth: losing the store loses freshness, never an event.
"""

from __future__ import annotations

from freshrec.core.layout import Layout
from freshrec.core.online.base import LiveEvent, OnlineStore, StoreUnavailable
from freshrec.core.settings import Settings

__all__ = ["LiveEvent", "OnlineStore", "StoreUnavailable", "open_store"]


def open_store(settings: Settings) -> OnlineStore:
    online = settings.online
    if online.store_url:
        from freshrec.core.online.redis_store import RedisStore

        return RedisStore(online.store_url, online.namespace, online.tail_length, online.tail_ttl_s, online.timeout_ms / 1000,
                          cache_events=online.client_cache_events, cache_max_age_s=online.client_cache_max_age_s)
    from freshrec.core.online.embedded import EmbeddedStore

    return EmbeddedStore(Layout(settings.home).online_store, online.namespace, online.tail_length, online.tail_ttl_s,
                         online.timeout_ms / 1000)
