"""The request path: route -> live tail -> cache -> user state -> batched ONNX scoring -> seen removed -> top-k.

Every answer's scores are on one scale, the probability that the item is the user's next interaction: the
model's softmax share over the candidate set (it is trained with that softmax), or for a cold-start or
fallback answer the item's share of the snapshot's interactions. The metrics keep the model's raw scores.

The user's live tail is read first (one store round trip) because it is part of the cache key: a cached
list never predates the user's latest acknowledged event, on any worker. When the store is down the
snapshot alone answers and nothing is cached.

Responses are rendered to JSON bytes here (orjson) so the cache stores exactly what goes on the wire.
"""

from __future__ import annotations

import asyncio
import random
from typing import NamedTuple

import numpy as np
import orjson

from freshrec.core.errors import FreshRecError, Overloaded
from freshrec.core.online import LiveEvent
from freshrec.serving.cache import ResultCache
from freshrec.serving.explain import explanation_rows, top_contributors
from freshrec.serving.live import LiveState, MergeMemo, merge_live
from freshrec.serving.metrics import ServingMetrics
from freshrec.serving.ranking import softmax_shares, top_k
from freshrec.serving.routing import RoutingTable
from freshrec.serving.versions import ServedVersion

SHADOW = "shadow"
MAX_OVERFETCH = 1000  # seen items an ANN request fetches extra for (a longer seen list may leave fewer than k)


class InjectedFault(FreshRecError):
    """A rehearsal fault the registry asked for (only with FRESHREC_ALLOW_FAULT_INJECTION=1)."""

    http_status = 500


class UserState(NamedTuple):
    history: np.ndarray | None  # model item indices, oldest first
    seen: np.ndarray | None  # item indices (cold start); an item may repeat
    seen_positions: np.ndarray | None  # positions in the version's candidates; a position may repeat
    known: bool  # the snapshot has a row for the user, or the live tail has events of theirs


class RecommendationService:
    def __init__(self, cache: ResultCache, metrics: ServingMetrics, live: LiveState, history_length: int,
                 allow_fault_injection: bool) -> None:
        self._cache = cache
        self._metrics = metrics
        self._live = live
        self._history_length = history_length
        self._allow_faults = allow_fault_injection
        self._background: set[asyncio.Task] = set()
        # An explanation is one model call of history-length + 1 rows: one at a time per worker.
        self._explaining = asyncio.Semaphore(1)
        self._memo = MergeMemo()

    def forget(self) -> None:
        """Drop the merged states of the versions a routing-table swap replaced."""
        self._memo.clear()

    def _user_state(self, served: ServedVersion, user_id: str, tail: list[LiveEvent] | None, exclude_seen: bool) -> UserState:
        """The snapshot's history and seen items of the user, merged with the live tail when there is one
        (a tail seen before with this version reuses its merge: :class:`MergeMemo`)."""
        if tail is not None:
            self._metrics.live_tail.observe(len(tail))
        if not tail:
            row = served.users.row(user_id)
            if row is None:
                return UserState(None, None, None, False)
            return UserState(served.users.history[row], served.users.seen[row] if exclude_seen else None,
                             served.seen_positions[row] if exclude_seen else None, True)
        key = MergeMemo.key(user_id, tail, exclude_seen)
        state = self._memo.get(served, key)
        if state is None:
            state = self._merged_state(served, user_id, tail, exclude_seen)
            self._memo.put(served, key, state)
        return state  # type: ignore[return-value]  # the memo holds what _merged_state made

    def _merged_state(self, served: ServedVersion, user_id: str, tail: list[LiveEvent], exclude_seen: bool) -> UserState:
        users = served.users
        row = users.row(user_id)
        history = users.history[row] if row is not None else None
        seen = users.seen[row] if (row is not None and exclude_seen) else None
        seen_positions = served.seen_positions[row] if (row is not None and exclude_seen) else None
        merged = merge_live(history, tail, users.watermark, served.model.item_index, self._history_length)
        if not exclude_seen or merged.live_items.size == 0:
            return _frozen(UserState(merged.history, seen, seen_positions, True))
        live_positions = served.candidate_pos[merged.live_items]
        live_positions = live_positions[live_positions >= 0]
        # An item seen in the snapshot and live again is in both: top_k and the cold start take repeats.
        return _frozen(UserState(
            merged.history,
            merged.live_items if seen is None else np.concatenate((seen, merged.live_items)),
            live_positions if seen_positions is None else np.concatenate((seen_positions, live_positions)),
            True,
        ))

    async def recommend(self, table: RoutingTable, routed: Route, user_id: str, k: int, exclude_seen: bool,
                        explain: bool = False) -> bytes:
        """The JSON body. The caller routed first (:func:`route_user`) so that failures, injected faults
        included, are counted against the variant and version that failed. ``explain`` adds each item's
        top contributing history items (a re-scoring per history item; explained answers are not cached)."""
        variant, served, shadow = routed
        version = served.version
        await self._apply_faults(table, version)
        tail = await self._live.tail(user_id)
        cacheable = self._cache.enabled and tail is not None and not explain
        # The newest live entry is in the key: an event acknowledged since makes an older list unreachable.
        key = (user_id, k, exclude_seen, variant, version, tail[-1][:2] if tail else None)
        if cacheable:
            cached = self._cache.get(key)
            (self._metrics.cache_miss if cached is None else self._metrics.cache_hit).inc()
            if cached is not None:
                self._metrics.response_children(variant, version)[1].inc()
                return cached
        history, seen, seen_positions, known = self._user_state(served, user_id, tail, exclude_seen)
        cold = history is None or history.size == 0
        because: list[list[tuple[int, float]]] | None = None
        if cold or history is None:  # the second test only tells the type checker
            items, scores = _cold_start(served, k, seen)
            shares = scores
            if explain:
                because = [[] for _ in range(items.size)]
        else:
            retrieval = served.model.retrieval
            if retrieval is None:
                candidates = served.candidates
                row_scores = await served.batcher.score(history)
                positions, scores = top_k(row_scores, k, seen_positions)
            else:
                # ANN candidates (over-fetched by the seen items, removed after exact scoring); the shares are
                # softmax shares among the retrieved items (the rest of a large catalogue holds little mass).
                n_seen = 0 if seen is None else seen.size
                candidates = retrieval.retriever.candidates(history.reshape(1, -1), more=min(n_seen, MAX_OVERFETCH))[0]
                row_scores = await served.batcher.score(history, candidates)
                masked = np.flatnonzero(np.isin(candidates, seen)) if seen is not None and n_seen else None
                positions, scores = top_k(row_scores, k, masked)
            shares = softmax_shares(row_scores, scores)
            items = candidates[positions]
            if shadow is not None:
                self._shadow_score(shadow, history)
            if explain:
                because = await self._contributors(served, history, positions, candidates)
        item_ids = served.model.item_ids
        answer = [{"item_id": item_ids[i - 1], "score": s} for i, s in zip(items.tolist(), shares.tolist())]
        if because is not None:
            for item, contributors in zip(answer, because):
                item["contributors"] = [{"item_id": item_ids[i - 1], "contribution": c} for i, c in contributors]
        body = orjson.dumps(
            {
                "user_id": user_id,
                "items": answer,
                "model_version": version,
                "variant": variant,
                "reason": "personalised" if not cold else ("fallback" if known else "cold_start"),
                "snapshot_only": tail is None,
            }
        )
        if cacheable:
            self._cache.put(key, body)
        score_histogram, impressions = self._metrics.response_children(variant, version)
        if scores.size:
            # The best score per response tracks drift at the cost of one observation.
            score_histogram.observe(float(scores[0]))
        impressions.inc()
        return body

    async def score(self, table: RoutingTable, routed: Route, user_id: str, item_ids: list[str]) -> bytes:
        variant, served, _ = routed
        version = served.version
        await self._apply_faults(table, version)
        index = served.model.item_index
        indices = np.fromiter((index.get(i, 0) for i in item_ids), dtype=np.int64, count=len(item_ids))
        known = indices > 0
        out: list[float | None] = [None] * len(item_ids)
        if known.any():
            history = self._user_state(served, user_id, await self._live.tail(user_id), exclude_seen=False).history
            if history is None or history.size == 0:
                values = served.users.popularity_of[indices[known]]
            else:
                values = await served.batcher.score(history, indices[known])
            for slot, value in zip(np.flatnonzero(known).tolist(), values.tolist()):
                out[slot] = value
        return orjson.dumps({"scores": out, "model_version": version, "variant": variant})

    async def _contributors(self, served: ServedVersion, history: np.ndarray, positions: np.ndarray,
                            scored: np.ndarray) -> list[list[tuple[int, float]]]:
        """Each recommended item's top history items: the drop in its share when that one item is left out.

        One scorer call of L + 1 rows over the candidates the answer was ranked among (``scored``), on a thread:
        it stays off the micro-batcher (it would split the rows into calls of serving.max_batch and hold the
        queue the hot path shares) and off the event loop (~3 ms for 256 history items with the demo student on
        one CPU core)."""
        rows = explanation_rows(history)
        candidates = np.ascontiguousarray(np.broadcast_to(scored, (rows.shape[0], scored.size)))
        async with self._explaining:
            scores = await asyncio.to_thread(served.model.scorer.score, rows, candidates)
        shares = softmax_shares(scores, scores[:, positions])
        return top_contributors(history, shares[:1] - shares[1:])

    async def _apply_faults(self, table: RoutingTable, version: str) -> None:
        if not self._allow_faults:
            return
        faults = table.faults.get(version)
        if not faults:
            return
        latency_ms = faults.get("latency_ms", 0.0)
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        if random.random() < faults.get("error_rate", 0.0):
            raise InjectedFault(f"injected fault on version {version}")

    def _shadow_score(self, shadow: ServedVersion, history: np.ndarray) -> None:
        """Score with the canary in the background; its scores are recorded, never returned."""

        async def run() -> None:
            try:
                scores = await shadow.batcher.score(history)
            except Overloaded:
                return  # shadow work is the first thing to shed
            if scores.size:
                self._metrics.response_children(SHADOW, shadow.version)[0].observe(float(scores.max()))

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class Route(NamedTuple):
    variant: str
    served: ServedVersion
    shadow: ServedVersion | None


def route_user(table: RoutingTable, user_id: str) -> Route:
    """The variant and version that answer this user (sticky), or 503 when nothing is loaded yet."""
    variant, served, shadow = table.route(user_id)
    if served is None:
        raise Overloaded("no model version is loaded yet", retry_after_s=5.0)
    return Route(variant, served, shadow)


def _frozen(state: UserState) -> UserState:
    """A memoised state is shared by later requests: its arrays are read-only (a view's base stays writable)."""
    for array in state[:3]:
        if array is not None:
            array.flags.writeable = False
    return state


def _cold_start(served: ServedVersion, k: int, seen: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The most popular items (minus the seen ones), scored by their share of the snapshot's interactions."""
    users = served.users
    if seen is None or seen.size == 0:
        return users.popular[:k], users.popular_scores[:k]
    window = min(users.popular.size, k + seen.size)
    keep = ~np.isin(users.popular[:window], seen)
    return users.popular[:window][keep][:k], users.popular_scores[:window][keep][:k]
