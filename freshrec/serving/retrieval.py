"""Candidates by ANN retrieval, for catalogues too large to score whole (freshrec.pipeline.export.retrieval builds
what this reads): the user tower turns histories into queries, the item index (a memory-mapped view: every worker
of a host shares the one copy in the page cache) returns the best ``fetch`` items by inner product, and the items
the student's sparse terms score exactly join them. The candidate graph then scores the union exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort  # before usearch: see below

# usearch 2.26's compiled module, once loaded, makes a later `import onnxruntime` (onnxruntime-gpu 1.31.1) crash the
# interpreter (SIGSEGV at import). onnxruntime loaded first is safe, so usearch is imported here only, after it, and
# the rest of FreshRec takes Index from this module (tests/serving/test_retriever.py holds both orders to account).
from usearch.index import Index  # noqa: E402

from freshrec.core.errors import ArtifactIntegrityError
from freshrec.core.schemas import ONNX_INPUT_HISTORY, ONNX_OUTPUT_EXTRA_ITEMS, ONNX_OUTPUT_QUERY


class Retriever:
    """``candidates(history [B, L]) -> B sorted int64 arrays`` of item indices (1..n_items).

    ``fetch`` items come from the index per row (more than the k asked for: seen items are removed after the
    exact scores, and the approximate order is refined by them); ``expansion`` is HNSW's search list (ef).
    """

    def __init__(self, tower: Path, index: Path, n_items: int, fetch: int, expansion: int, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._tower = ort.InferenceSession(str(tower), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT's load errors share no base class
            raise ArtifactIntegrityError(f"ONNX Runtime cannot load the user tower {tower}: {exc}") from exc
        self.n_items = n_items
        self.fetch = min(fetch, n_items)
        self.expansion = max(expansion, self.fetch)
        try:
            opened = Index.restore(str(index), view=True, expansion_search=self.expansion)  # the file does not keep ef
        except (OSError, ValueError, RuntimeError) as exc:
            raise ArtifactIntegrityError(f"{index} is not a usearch index: {exc}") from exc
        if opened is None:
            raise ArtifactIntegrityError(f"{index} is not a usearch index")
        query_width = self._tower.get_outputs()[0].shape[-1]
        if opened.ndim != query_width and isinstance(query_width, int):
            raise ArtifactIntegrityError(f"{index} holds {opened.ndim}-d keys, the tower makes {query_width}-d queries")
        if len(opened) != n_items:
            raise ArtifactIntegrityError(f"{index} holds {len(opened)} items, the vocabulary {n_items}")
        self._index = opened
        self.threads = threads

    def queries(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        query, extra = self._tower.run([ONNX_OUTPUT_QUERY, ONNX_OUTPUT_EXTRA_ITEMS], {ONNX_INPUT_HISTORY: history})
        return query, extra

    def candidates(self, history: np.ndarray, more: int = 0) -> list[np.ndarray]:
        """``more``: fetch that many items beyond ``fetch`` (the caller will remove that many seen items)."""
        query, extra = self.queries(history)
        found = self._index.search(query, min(self.fetch + more, self.n_items), threads=self.threads)
        keys = found.keys.reshape(len(query), -1)
        # one query gives a Matches (no counts: its keys are the matches), several a BatchMatches
        counts = np.atleast_1d(getattr(found, "counts", keys.shape[1]))
        rows = []
        for row in range(len(query)):
            ann = keys[row, : int(counts[row])].astype(np.int64)
            sparse = extra[row][extra[row] > 0]
            rows.append(np.unique(np.concatenate((ann, sparse))) if sparse.size else np.sort(ann))
        return rows

    @property
    def index_bytes(self) -> int:
        return int(self._index.memory_usage)
