"""Prequential quality: held-out events replayed in time order, every target scored just before it happens.

``PROTOCOL`` says exactly what is measured (every report carries it). The live HTTP client
(``ServedRecommender``) is the only I/O here; replay order, targets, ranks and summaries are pure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from freshrec.core.errors import FreshRecError
from freshrec.pipeline.training.ease import ease_weights

K = 10
RETRY_FOR_S = 30.0  # how long a refused (503) batch of the replay is retried before the bench fails
PROTOCOL = (
    "The replay is the held-out days' raw events sorted by time (ties keep file order), restricted to whole users "
    "drawn at random until the event cap: each user's recommendations depend only on the model and that user's own "
    "events, so a user's slice is exactly what the full replay would show them. A target is the first interaction of a "
    "(user, item) pair the user did not have in the training days, whose item is in the training days (the model's "
    "vocabulary: an item no model could rank is nobody's miss). Before each "
    "target the recommender returns its top 10 over the whole catalogue with seen items excluded; HR@10 = 1 when the "
    "item is in it, nDCG@10 = 1 / log2(1 + rank) (one relevant item). After every replayed event, target or not, a live "
    "recommender is told of it: realtime mode posts it to /v1/events (all events since the last request in one call, "
    "before the next request: the visibility of one call per event), the in-process baselines add it to the user's "
    "history; static mode posts nothing. Known users are in the training days, new users are not."
)
EVENT_COLUMNS = ["user_id", "item_id", "event_type", "value", "ts"]


class ReplayFailed(FreshRecError):
    exit_code = 12


class Recommender(Protocol):
    def recommend(self, user_id: str, k: int) -> list[str]: ...

    def observe(self, event: dict) -> None: ...


@dataclass(frozen=True)
class Replay:
    """The replayed events (JSON-ready dicts, in order) and which of them are targets."""

    events: list[dict]
    targets: np.ndarray  # bool per event
    known_user: np.ndarray  # bool per event: the user is in the training data

    @property
    def target_known_user(self) -> np.ndarray:
        return self.known_user[self.targets]

    @property
    def target_users(self) -> np.ndarray:
        return np.array([e["user_id"] for e, is_target in zip(self.events, self.targets) if is_target], dtype=object)


def replay_order(events: pd.DataFrame, max_events: int | None, seed: int) -> pd.DataFrame:
    """Held-out events in time order; above ``max_events``, only whole users drawn at random until the cap."""
    frame = events[EVENT_COLUMNS].reset_index(drop=True)
    frame = frame.iloc[np.argsort(pd.to_datetime(frame["ts"], utc=True).to_numpy(), kind="stable")]
    if max_events is not None and len(frame) > max_events:
        sizes = frame.groupby("user_id", sort=True).size()
        drawn = sizes.iloc[np.random.default_rng(seed).permutation(len(sizes))]
        within = drawn.cumsum() <= max_events
        within.iloc[0] = True  # at least one user, however large
        frame = frame[frame["user_id"].isin(drawn.index[within.to_numpy()])]
    return frame.reset_index(drop=True)


def build_replay(ordered: pd.DataFrame, train_pairs: set[tuple[str, str]], known_users: set[str],
                 known_items: set[str], event_id_prefix: str) -> Replay:
    """Targets and user groups of an ordered replay; every event gets a unique ``event_id``."""
    users, items = ordered["user_id"].astype(str).tolist(), ordered["item_id"].astype(str).tolist()
    seen = set(train_pairs)
    targets = np.zeros(len(ordered), dtype=bool)
    for i, pair in enumerate(zip(users, items)):
        if pair not in seen:
            seen.add(pair)
            targets[i] = pair[1] in known_items
    records = ordered.assign(user_id=users, item_id=items, value=ordered["value"].astype(float),
                             ts=ordered["ts"].astype(str)).to_dict("records")
    events = [{**record, "event_id": f"{event_id_prefix}{i}"} for i, record in enumerate(records)]
    return Replay(events, targets, np.fromiter((u in known_users for u in users), dtype=bool, count=len(users)))


def rank_of(ranked: Sequence[str], item: str, k: int = K) -> int:
    """1-based rank of ``item`` in the top k, 0 when it is not there."""
    top = list(ranked[:k])
    return top.index(item) + 1 if item in top else 0


def replay(plan: Replay, recommender: Recommender, k: int = K, advance: Callable[[int], None] | None = None) -> np.ndarray:
    """Ranks (0 = miss) of every target, in replay order."""
    ranks = []
    for event, is_target in zip(plan.events, plan.targets):
        if is_target:
            ranks.append(rank_of(recommender.recommend(event["user_id"], k), event["item_id"], k))
        recommender.observe(event)
        if advance:
            advance(1)
    return np.asarray(ranks, dtype=np.int64)


def target_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Per target: HR@k (hit or not) and nDCG@k (one relevant item: 1 / log2(1 + rank))."""
    hit = ranks > 0
    return {"hr": hit.astype(np.float64), "ndcg": np.where(hit, 1.0 / np.log2(1.0 + np.maximum(ranks, 1)), 0.0)}


def summarise(ranks: np.ndarray, known_user: np.ndarray, k: int = K) -> dict[str, dict]:
    """HR@k and nDCG@k (means over targets) for known users, new users and all."""
    metrics = target_metrics(ranks)
    out = {}
    for group, mask in (("known", known_user), ("new", ~known_user), ("all", np.ones_like(known_user))):
        n = int(mask.sum())
        out[group] = {"targets": n, **{f"{name}@{k}": float(values[mask].mean()) if n else None
                                        for name, values in metrics.items()}}
    return out


def paired_user_bootstrap(a: np.ndarray, b: np.ndarray, users: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of ``a - b`` over targets and its 95% interval, resampling whole users: one user's targets are
    not independent of each other (the same history, often the same session)."""
    codes, user = np.unique(users, return_inverse=True)
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    sums, counts = np.bincount(user, diff, len(codes)), np.bincount(user, minlength=len(codes))
    draws = np.random.default_rng(seed).integers(0, len(codes), size=(resamples, len(codes)))
    means = sums[draws].sum(axis=1) / np.maximum(counts[draws].sum(axis=1), 1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"mean_diff": float(diff.mean()), "ci95_low": float(low), "ci95_high": float(high),
            "targets": int(diff.size), "users": int(len(codes))}


def paired_hr(ranks: dict[str, np.ndarray], known: np.ndarray, users: np.ndarray) -> dict[str, dict]:
    """Realtime minus static and minus EASE fed the events, per user group: per-target HR@10 differences
    (every mode ranks the same targets) with intervals that resample users."""
    hits = {mode: (r > 0).astype(np.float64) for mode, r in ranks.items()}
    return {f"realtime - {other} ({group})": paired_user_bootstrap(hits["realtime"][mask], hits[other][mask], users[mask])
            for group, mask in (("known", known), ("new", ~known)) if mask.any() for other in ("static", "ease_realtime")}


# ---- in-process baselines -----------------------------------------------------------------------
class ItemItemRecommender:
    """history x W over the whole catalogue (EASE when W is EASE's), seen items excluded, ties broken by
    popularity (a user with no history gets the popular items). ``live``: replayed events join the history."""

    def __init__(self, weights: np.ndarray | None, items: list[str], popularity: np.ndarray,
                 histories: dict[str, set[int]], live: bool) -> None:
        self.weights, self.items, self.live = weights, items, live
        self.index = {item: i + 1 for i, item in enumerate(items)}
        self.popularity = popularity
        self.histories = {user: set(h) for user, h in histories.items()}

    def recommend(self, user_id: str, k: int) -> list[str]:
        history = np.fromiter(self.histories.get(user_id, ()), dtype=np.int64)
        scores = np.zeros(len(self.items) + 1)
        if self.weights is not None and history.size:
            scores = self.weights[history].sum(axis=0, dtype=np.float64)
        scores[0] = -np.inf
        scores[history] = -np.inf
        order = np.lexsort((-self.popularity, -scores))[:k]  # last key first: score, then popularity
        return [self.items[i - 1] for i in order if np.isfinite(scores[i])]

    def observe(self, event: dict) -> None:
        index = self.index.get(event["item_id"])
        if self.live and index is not None:
            self.histories.setdefault(event["user_id"], set()).add(index)


@dataclass(frozen=True)
class TrainingHistories:
    """The training days as item-index histories (index 0 = padding) and per-item user counts."""

    items: list[str]
    histories: dict[str, set[int]]
    popularity: np.ndarray  # float [n_items + 1], users per item

    @classmethod
    def of(cls, events: pd.DataFrame) -> TrainingHistories:
        pairs = events[["user_id", "item_id"]].astype(str).drop_duplicates()
        items = sorted(pairs["item_id"].unique())
        index = {item: i + 1 for i, item in enumerate(items)}
        codes = pairs["item_id"].map(index).to_numpy()
        histories = {user: set(group.tolist()) for user, group in pd.Series(codes).groupby(pairs["user_id"].to_numpy())}
        popularity = np.bincount(codes, minlength=len(items) + 1).astype(np.float64)
        return cls(items, histories, popularity)

    def ease(self, l2: float) -> np.ndarray:
        return ease_weights([np.fromiter(h, dtype=np.int64) for h in self.histories.values()], len(self.items), l2)

    def recommender(self, weights: np.ndarray | None, live: bool) -> ItemItemRecommender:
        return ItemItemRecommender(weights, self.items, self.popularity, self.histories, live)


def select_ease_l2(fit_events: pd.DataFrame, validation_events: pd.DataFrame, grid: Iterable[float],
                   max_events: int | None, seed: int) -> tuple[float, list[dict]]:
    """EASE's lambda by the bench's own protocol one step earlier: fit on all training days but the last,
    replay the last one live (HR@10 of its targets). Returns the best lambda and every trial."""
    train = TrainingHistories.of(fit_events)
    pairs = set(zip(fit_events["user_id"].astype(str), fit_events["item_id"].astype(str)))
    plan = build_replay(replay_order(validation_events, max_events, seed), pairs, set(train.histories),
                        set(train.items), "validation-")
    trials = []
    for l2 in grid:
        ranks = replay(plan, train.recommender(train.ease(l2), live=True))
        trials.append({"l2": l2, "hr@10": float(target_metrics(ranks)["hr"].mean()) if ranks.size else 0.0,
                       "targets": int(ranks.size)})
    best = max(trials, key=lambda t: t["hr@10"])
    return best["l2"], trials


# ---- the served model over HTTP -----------------------------------------------------------------
class ServedRecommender:
    """A live client of ``freshrec serve`` on one persistent connection: ``/v1/recommend`` (k, seen
    excluded) and, when ``post_events``, every observed event to ``/v1/events`` before the next request."""

    def __init__(self, client, post_events: bool, max_batch: int = 1000) -> None:  # client: httpx.Client
        self.client, self.post_events, self.max_batch = client, post_events, max_batch
        self.pending: list[dict] = []
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.model_versions: set[str] = set()
        self.refused_then_retried = 0  # 503 + Retry-After answers (shed or refused), sent again as a client would
        self.snapshot_only = 0  # recommendations served while the store did not answer (live events not merged)

    def champion(self) -> dict:
        """The served champion's version and catalogue size (GET /v1/models)."""
        body = self.client.get("/v1/models").json()
        champion: dict[str, Any] = next((v for v in body.get("versions", []) if v.get("role") == "champion"), {})
        return {"model_version": str(champion.get("version")), "n_items": champion.get("n_items")}

    def recommend(self, user_id: str, k: int) -> list[str]:
        self.flush()
        response = self._post_retrying("/v1/recommend", {"user_id": user_id, "k": k, "exclude_seen": True})
        if response.status_code != 200:
            raise ReplayFailed(f"/v1/recommend answered {response.status_code}: {response.text[:300]}")
        body = response.json()
        self.model_versions.add(str(body.get("model_version")))
        self.snapshot_only += bool(body.get("snapshot_only"))
        return [entry["item_id"] for entry in body["items"]]

    def observe(self, event: dict) -> None:
        if self.post_events:
            self.pending.append(event)
            if len(self.pending) >= self.max_batch:
                self.flush()

    def _post_retrying(self, route: str, body: dict):
        """POST, sending it again after a 503 with Retry-After (shed or refused: nothing was done), as a client would."""
        response = self.client.post(route, json=body)
        deadline = time.monotonic() + RETRY_FOR_S
        while response.status_code == 503 and "retry-after" in response.headers and time.monotonic() < deadline:
            self.refused_then_retried += 1
            time.sleep(min(float(response.headers["retry-after"]), 1.0))
            response = self.client.post(route, json=body)
        return response

    def flush(self) -> None:
        if not self.pending:
            return
        response = self._post_retrying("/v1/events", {"events": self.pending})
        if response.status_code != 200:
            raise ReplayFailed(f"/v1/events answered {response.status_code}: {response.text[:300]}")
        body = response.json()
        self.accepted += int(body["accepted"])
        for rejection in body.get("rejected", []):
            self.rejected[rejection["reason"]] = self.rejected.get(rejection["reason"], 0) + 1
        self.pending = []
