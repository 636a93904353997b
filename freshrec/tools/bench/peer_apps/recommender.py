"""FreshRec's ``/v1/recommend`` work for one batch of requests, shared by every peer adapter.

The same pieces ``freshrec serve`` runs (the contract's request model, ``bind_snapshot``, the tuned int8 CPU
session, ``right_aligned``, ``top_k``, the cold-start list) minus what only a live platform needs (live tail,
canary routing, cache, metrics): a peer then does no less per request than FreshRec, and its answers can be
checked against FreshRec's item for item.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from freshrec.core.settings import ServingSettings
from freshrec.serving.contract import RecommendRequest
from freshrec.serving.execution import CpuScorer, cpu_session, sha256_of
from freshrec.serving.ranking import right_aligned, softmax_shares, top_k
from freshrec.serving.snapshot import bind_snapshot, read_snapshot

INT8_ARTIFACT = "student.int8.onnx"


class Recommender:
    """The champion's int8 student over one online snapshot; :meth:`recommend` answers a batch at once."""

    def __init__(self, bundle: Path, snapshot: Path, model_version: str, history_length: int = 256,
                 max_candidates: int = 5000, intra_op_threads: int = 1) -> None:
        artifact = bundle / INT8_ARTIFACT
        self.model_version = model_version
        self.item_ids: list[str] = [str(i) for i in json.loads((bundle / "vocab.json").read_text())["items"]]
        self.users = bind_snapshot(read_snapshot(snapshot.parent, snapshot.name), self.item_ids, history_length)
        self.candidates = _shared_candidates(len(self.item_ids), self.users.popular, max_candidates)
        positions = np.full(len(self.item_ids) + 1, -1, dtype=np.int64)
        positions[self.candidates] = np.arange(self.candidates.size)
        self.seen_positions = self.users.seen.mapped(positions)
        self._candidate_rows = np.ascontiguousarray(self.candidates[None, :])
        settings = ServingSettings(intra_op_threads=intra_op_threads)
        self.scorer = CpuScorer(cpu_session(artifact, sha256_of(artifact), settings))

    def recommend(self, requests: list[RecommendRequest]) -> list[dict[str, Any]]:
        """One response body per request, in order; the personalised ones share one ONNX call."""
        rows = [self.users.row(r.user_id) for r in requests]
        personalised: dict[int, dict[str, Any]] = {}
        warm = [(i, row) for i, row in enumerate(rows) if row is not None and self.users.history[row].size]
        if warm:
            history = right_aligned([self.users.history[row] for _, row in warm])
            for scores, (i, row) in zip(self.scorer.score(history, self._candidates_for(len(warm))), warm):
                request = requests[i]
                positions, best = top_k(scores, request.k, self.seen_positions[row] if request.exclude_seen else None)
                shares = softmax_shares(scores, best)
                personalised[i] = self._body(request, self.candidates[positions], shares, "personalised")
        return [personalised.get(i) or self._cold_start(request, row) for i, (request, row) in enumerate(zip(requests, rows))]

    def _candidates_for(self, batch: int) -> np.ndarray:
        """The candidate matrix of a batch, built once per batch size high-water mark (FreshRec's batcher keeps
        one too) rather than copied per call."""
        if self._candidate_rows.shape[0] < batch:
            self._candidate_rows = np.ascontiguousarray(np.broadcast_to(self.candidates, (batch, self.candidates.size)))
        return self._candidate_rows[:batch]

    def _cold_start(self, request: RecommendRequest, row: int | None) -> dict[str, Any]:
        """The most popular items minus the seen ones: ``freshrec.serving.service._cold_start``'s rule."""
        popular, shares = self.users.popular, self.users.popular_scores
        seen = self.users.seen[row] if row is not None and request.exclude_seen else None
        if seen is not None and seen.size:
            window = min(popular.size, request.k + seen.size)
            keep = ~np.isin(popular[:window], seen)
            popular, shares = popular[:window][keep], shares[:window][keep]
        return self._body(request, popular[: request.k], shares[: request.k], "cold_start" if row is None else "fallback")

    def _body(self, request: RecommendRequest, items: np.ndarray, scores: np.ndarray, reason: str) -> dict[str, Any]:
        return {
            "user_id": request.user_id,
            "items": [{"item_id": self.item_ids[i - 1], "score": s} for i, s in zip(items.tolist(), scores.tolist())],
            "model_version": self.model_version,
            "variant": "champion",
            "reason": reason,
            "snapshot_only": False,
        }


def _shared_candidates(n_items: int, popular: np.ndarray, max_candidates: int) -> np.ndarray:
    """``freshrec.serving.versions.shared_candidates``: the catalogue, or its most popular slice when larger."""
    if n_items <= max_candidates:
        return np.arange(1, n_items + 1, dtype=np.int64)
    return np.sort(popular[:max_candidates])


def from_environment() -> Recommender:
    """The recommender the bench asked for, from the variables it sets (peer frameworks build their model
    objects themselves, in processes they start, so arguments cannot be handed over directly)."""
    return Recommender(Path(os.environ["FRESHREC_PEER_BUNDLE"]), Path(os.environ["FRESHREC_PEER_SNAPSHOT"]),
                       os.environ["FRESHREC_PEER_MODEL_VERSION"],
                       history_length=int(os.environ.get("FRESHREC_PEER_HISTORY_LENGTH", "256")),
                       max_candidates=int(os.environ.get("FRESHREC_PEER_MAX_CANDIDATES", "5000")))
