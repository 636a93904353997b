"""Model versions ready to serve: a verified, warmed scorer plus the snapshot bound to its vocabulary.

``load_model`` (blocking I/O: checksum, ONNX session, warm-up) runs off the event loop;
``serve_version`` binds a snapshot and attaches the version's micro-batcher. A snapshot change rebinds
the same model (``rebind``) without reloading it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from freshrec.core.errors import ArtifactIntegrityError, NotFound
from freshrec.core.registry.integrity import sha256_file
from freshrec.core.schemas import (
    BUNDLE_CANDIDATE_GRAPH,
    BUNDLE_ITEM_INDEX,
    BUNDLE_USER_TOWER,
    BUNDLE_VOCAB,
    SHA256SUMS,
)
from freshrec.core.settings import Settings
from freshrec.serving.batcher import BatchObserver, MicroBatcher, ScoreJob
from freshrec.serving.execution import Scorer, default_variant, warm_up
from freshrec.serving.ragged import Ragged
from freshrec.serving.ranking import padded_candidates, right_aligned
from freshrec.serving.registry_gateway import DesiredVersion
from freshrec.serving.retrieval import Retriever
from freshrec.serving.scorers import build_scorer
from freshrec.serving.snapshot import BindableSnapshot, UserTable


@dataclass(frozen=True)
class VersionModel:
    """Everything about a version that does not depend on the snapshot."""

    version: str
    artifact_variant: str
    sha256: str
    scorer: Scorer
    item_ids: list[str]  # index i >= 1 -> item_ids[i - 1]
    item_index: dict[str, int]
    created_at: dt.datetime | None
    loaded_at: float
    retrieval: RetrievalSetup | None = None  # a catalogue above serving.max_candidates whose bundle has an ANN index

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True)
class ServedVersion:
    """A model bound to the live snapshot, with the shared candidate set and its micro-batcher."""

    model: VersionModel
    users: UserTable
    candidates: np.ndarray  # int64 item indices scored for /v1/recommend
    candidate_pos: np.ndarray  # int64 [n_items + 1]: item index -> position in candidates, -1 if absent
    seen_positions: MappedRows  # per user row: positions in candidates of the items they have seen
    batcher: MicroBatcher

    @property
    def version(self) -> str:
        return self.model.version

    def item_id(self, index: int) -> str:
        return self.model.item_ids[index - 1]


def pick_artifact(desired: DesiredVersion, configured: str, providers: list[str]) -> str:
    if configured != "auto":
        if configured not in desired.artifacts:
            raise NotFound(f"version {desired.version} has no {configured!r} artifact ({sorted(desired.artifacts)})")
        return configured
    preferred = default_variant(providers)
    for variant in (preferred, "fp32"):
        if variant in desired.artifacts:
            return variant
    raise NotFound(f"version {desired.version} has neither a {preferred} nor an fp32 artifact")


def bundle_sha256(bundle_dir: Path, name: str) -> str | None:
    """What the bundle's SHA256SUMS says ``name`` hashes to; None when the bundle has no SHA256SUMS. A listed
    bundle that does not list ``name`` is refused."""
    sums = bundle_dir / SHA256SUMS
    if not sums.is_file():
        return None
    expected = next((line.split("  ", 1)[0] for line in sums.read_text().splitlines()
                     if line.split("  ", 1)[-1] == name), None)
    if expected is None:
        raise ArtifactIntegrityError(f"{bundle_dir / name} is not in the bundle's {SHA256SUMS}")
    return expected


def read_vocab_items(bundle_dir: Path) -> list[str]:
    """The model's item ids, from the bytes the bundle's SHA256SUMS vouches for (when it has one): an
    edited vocabulary would silently map every score to the wrong item."""
    path = bundle_dir / BUNDLE_VOCAB
    try:
        raw = path.read_bytes()
        expected = bundle_sha256(bundle_dir, BUNDLE_VOCAB)
        if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
            raise ArtifactIntegrityError(f"the item vocabulary {path} does not match the bundle's {SHA256SUMS}")
        items = json.loads(raw)["items"]
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactIntegrityError(f"cannot read the item vocabulary {path}: {exc}") from exc
    return [str(i) for i in items]


@dataclass(frozen=True)
class RetrievalSetup:
    """A version served through ANN retrieval: the candidate graph scores what the retriever finds."""

    retriever: Retriever
    graph_sha256: str

    def describe(self) -> dict:
        return {"graph": BUNDLE_CANDIDATE_GRAPH, "graph_variant": "fp32", "graph_sha256": self.graph_sha256,
                "index": BUNDLE_ITEM_INDEX, "index_bytes": self.retriever.index_bytes, "fetch": self.retriever.fetch,
                "expansion": self.retriever.expansion}


def retrieval_files(bundle_dir: Path) -> dict[str, Path] | None:
    """The bundle's retrieval files when it has all of them (export writes them above serving.max_candidates)."""
    files = {name: bundle_dir / name for name in (BUNDLE_CANDIDATE_GRAPH, BUNDLE_USER_TOWER, BUNDLE_ITEM_INDEX)}
    return files if all(path.is_file() for path in files.values()) else None


def _verified(bundle_dir: Path, path: Path) -> str:
    """The file's sha256, checked against the bundle's SHA256SUMS (a bundle without one: computed only)."""
    actual = sha256_file(path)
    expected = bundle_sha256(bundle_dir, path.name)
    if expected is not None and actual != expected:
        raise ArtifactIntegrityError(f"{path} does not match the bundle's {SHA256SUMS}")
    return actual


def shared_candidates(n_items: int, users: UserTable, max_candidates: int) -> np.ndarray:
    """The whole catalogue when it is small; else retrieval: the most popular ``max_candidates`` items."""
    if n_items <= max_candidates:
        return np.arange(1, n_items + 1, dtype=np.int64)
    return np.sort(users.popular[:max_candidates])


def load_model(desired: DesiredVersion, settings: Settings, providers: list[str]) -> VersionModel:
    """Verify, open and warm up one version (blocking; call from a worker thread)."""
    variant = pick_artifact(desired, settings.serving.artifact_variant, providers)
    artifact = desired.artifacts[variant]
    item_ids = read_vocab_items(desired.bundle_dir)
    s = settings.serving
    n_shared = min(len(item_ids), s.max_candidates)
    history_length = settings.data.online_history_length
    files = retrieval_files(desired.bundle_dir) if len(item_ids) > s.max_candidates else None
    retrieval = None
    if files is None:
        scorer = build_scorer(artifact.path, artifact.sha256, s, providers, history_length, n_shared)
    else:
        # The catalogue is too large to score whole: the candidate graph scores what the ANN index retrieves.
        graph = files[BUNDLE_CANDIDATE_GRAPH]
        graph_sha = _verified(desired.bundle_dir, graph)
        for name in (BUNDLE_USER_TOWER, BUNDLE_ITEM_INDEX):
            _verified(desired.bundle_dir, files[name])
        scorer = build_scorer(graph, graph_sha, s, providers, history_length, s.retrieval_fetch)
        retrieval = RetrievalSetup(Retriever(files[BUNDLE_USER_TOWER], files[BUNDLE_ITEM_INDEX], len(item_ids),
                                             s.retrieval_fetch, s.retrieval_expansion), graph_sha)
        retrieval.retriever.candidates(np.ones((1, history_length), dtype=np.int64))  # pages the index in, checks it
    warm_up(scorer, np.arange(1, n_shared + 1, dtype=np.int64), history_length, s.max_batch)
    return VersionModel(
        version=desired.version,
        artifact_variant=variant,
        sha256=artifact.sha256,
        scorer=scorer,
        item_ids=item_ids,
        item_index={item: i + 1 for i, item in enumerate(item_ids)},
        created_at=desired.created_at,
        loaded_at=time.time(),
        retrieval=retrieval,
    )


def batch_runner(scorer: Scorer, candidates: np.ndarray, max_batch: int):
    """The function the scoring thread runs for one batch of jobs."""
    shared_matrix = np.ascontiguousarray(np.broadcast_to(candidates, (max_batch, candidates.size)))

    def run(jobs: list[ScoreJob]) -> list[np.ndarray]:
        results: list[np.ndarray | None] = [None] * len(jobs)
        shared = [i for i, j in enumerate(jobs) if j.candidates is None]
        own = [(i, j.candidates) for i, j in enumerate(jobs) if j.candidates is not None]
        if shared:
            history = right_aligned([jobs[i].history for i in shared])
            scores = scorer.score(history, shared_matrix[: len(shared)])
            for row, i in enumerate(shared):
                results[i] = scores[row]
        if own:
            history = right_aligned([jobs[i].history for i, _ in own])
            scores = scorer.score(history, padded_candidates([candidates for _, candidates in own]))
            for row, (i, candidates) in enumerate(own):
                results[i] = scores[row, : candidates.size]
        return results  # type: ignore[return-value]

    return run


def serve_version(
    model: VersionModel,
    snapshot: BindableSnapshot,
    settings: Settings,
    executor: Executor | None,
    observe: BatchObserver | None = None,
) -> ServedVersion:
    users = snapshot.bind(model.item_ids, settings.data.online_history_length)
    candidates = shared_candidates(model.n_items, users, settings.serving.max_candidates)
    s = settings.serving
    batcher = MicroBatcher(
        batch_runner(model.scorer, candidates, s.max_batch),
        executor,
        max_batch=s.max_batch,
        max_wait_ms=s.max_wait_ms,
        max_queue=s.max_queue,
        deadline_ms=s.request_deadline_ms,
        observe=observe,
    )
    positions = candidate_positions(candidates, model.n_items)
    return ServedVersion(model, users, candidates, positions, seen_positions(users, positions), batcher)


def candidate_positions(candidates: np.ndarray, n_items: int) -> np.ndarray:
    positions = np.full(n_items + 1, -1, dtype=np.int64)
    positions[candidates] = np.arange(candidates.size)
    return positions


@dataclass(frozen=True)
class MappedRows:
    """A user's seen items as positions in the version's candidates, mapped when asked (a few hundred lookups per
    request) rather than stored: a stored copy would be one more per-user array in every worker."""

    seen: Ragged
    positions: np.ndarray  # int64 [n_items + 1]: item index -> position in candidates, -1 if absent
    complete: bool  # every item is a candidate: no position is -1

    def __getitem__(self, row: int) -> np.ndarray:
        mapped = self.positions[self.seen[row]]
        return mapped if self.complete else mapped[mapped >= 0]


def seen_positions(users: UserTable, positions: np.ndarray) -> MappedRows:
    return MappedRows(users.seen, positions, complete=bool((positions[1:] >= 0).all()))


def rebind(
    served: ServedVersion,
    snapshot: BindableSnapshot,
    settings: Settings,
    executor: Executor | None,
    observe: BatchObserver | None = None,
) -> ServedVersion:
    """The same model over a new snapshot; the batcher is kept unless the retrieval set changes."""
    if served.candidates.size < served.model.n_items:
        # A retrieval set follows popularity and the batcher's pre-built candidate matrix has its shape.
        return serve_version(served.model, snapshot, settings, executor, observe)
    users = snapshot.bind(served.model.item_ids, settings.data.online_history_length)
    return replace(served, users=users, seen_positions=seen_positions(users, served.candidate_pos))
