"""Rank the whole catalogue for users, with their seen items removed, through any scorer.

A scorer maps a padded history batch int64 [B, L] to catalogue scores [B, n_items + 1] (column 0 is the
padding index). Torch models and ONNX Runtime sessions both fit behind this callable, so the same
ranking code evaluates the teacher, the students and the exported int8 graph.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from freshrec.core.schemas import ONNX_INPUT_CANDIDATES, ONNX_INPUT_HISTORY
from freshrec.pipeline.offline.metrics import ItemLists

Scorer = Callable[[np.ndarray], np.ndarray]


def top_k(
    scorer: Scorer,
    histories: np.ndarray,
    seen: ItemLists,
    k: int = 10,
    batch_size: int = 256,
) -> np.ndarray:
    """int64 [n_users, k] best item indices per user, never padding, never a seen item."""
    ranked = []
    for start in range(0, len(histories), batch_size):
        scores = np.array(scorer(histories[start : start + batch_size]), dtype=np.float32, copy=True)
        scores[:, 0] = -np.inf
        for row, items in enumerate(seen[start : start + batch_size]):
            scores[row, np.asarray(items, dtype=np.int64)] = -np.inf
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        ranked.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(ranked) if ranked else np.zeros((0, k), dtype=np.int64)


def torch_scorer(model, device: str = "cpu") -> Scorer:
    """Catalogue scores from a torch model's ``catalogue_logits`` (eval mode, no grad)."""
    import torch

    model.eval()

    def score(history: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.catalogue_logits(torch.from_numpy(history).to(device)).float().cpu().numpy()

    return score


def onnx_scorer(model_path: Path, n_items: int, threads: int = 1) -> Scorer:
    """Catalogue scores from an exported graph: every item 1..n_items is a candidate."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    all_items = np.arange(1, n_items + 1, dtype=np.int64)

    def score(history: np.ndarray) -> np.ndarray:
        candidates = np.broadcast_to(all_items, (len(history), n_items)).copy()
        (scores,) = session.run(None, {ONNX_INPUT_HISTORY: history, ONNX_INPUT_CANDIDATES: candidates})
        return np.concatenate([np.full((len(history), 1), -np.inf, dtype=np.float32), scores], axis=1)

    return score
