"""The smallest student graph that keeps parity with the served one, for the edge bundle.

A served int8 graph whose recipe kept the item embedding tables that feed a Gather in fp32 (a recipe without
``embeddings`` or ``row_tables``, or a version exported before those) has most of its bytes there. Smaller
variants store those tables in fp16 or in int8 (one scale per row) and restore them with a Cast /
DequantizeLinear in front of the Gather. When the served graph already stores them in int8 there is nothing
to shrink and the served graph ships as it is. Each is scored with ONNX Runtime
against the served graph on real histories; a variant is kept only with identical top-10 (seen items
removed) for ``min_top10`` of them and the same rank 1 for all. Pure computation on bytes and arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from freshrec.core.schemas import ONNX_INPUT_CANDIDATES, ONNX_INPUT_HISTORY

MIN_TABLE_VALUES = 4096  # smaller fp32 tables are not worth a node


def _gathered_tables(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    gathered = {node.input[0] for node in model.graph.node if node.op_type == "Gather"}
    return [t for t in model.graph.initializer
            if t.name in gathered and t.data_type == TensorProto.FLOAT and int(np.prod(t.dims)) >= MIN_TABLE_VALUES]


def _fp16(name: str, table: np.ndarray) -> tuple[list[onnx.TensorProto], onnx.NodeProto]:
    stored = numpy_helper.from_array(table.astype(np.float16), f"{name}__fp16")
    return [stored], helper.make_node("Cast", [stored.name], [name], to=TensorProto.FLOAT)


def _int8_rows(name: str, table: np.ndarray) -> tuple[list[onnx.TensorProto], onnx.NodeProto]:
    scale = (np.abs(table).max(axis=1) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
    # Symmetric: no zero point (DequantizeLinear's default is 0).
    tensors = [numpy_helper.from_array(q, f"{name}__q8"), numpy_helper.from_array(scale, f"{name}__scale")]
    return tensors, helper.make_node("DequantizeLinear", [t.name for t in tensors], [name], axis=0)


STORAGE: dict[str, Callable[[str, np.ndarray], tuple[list[onnx.TensorProto], onnx.NodeProto]]] = {
    "tables_fp16": _fp16, "tables_int8": _int8_rows}


def shrink(graph: bytes, storage: str) -> bytes | None:
    """The graph with its gathered fp32 tables stored as ``storage``; None when it has no such table."""
    model = onnx.load_from_string(graph)
    tables = _gathered_tables(model)
    if not tables or max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 13:
        return None  # nothing to shrink, or no per-row DequantizeLinear (axis needs opset 13)
    for table in tables:
        tensors, node = STORAGE[storage](table.name, numpy_helper.to_array(table))
        model.graph.initializer.remove(table)
        model.graph.initializer.extend(tensors)
        model.graph.node.insert(0, node)
    return model.SerializeToString()


def _top10(session: ort.InferenceSession, history: list[int], candidates: np.ndarray) -> np.ndarray:
    scores = session.run(None, {ONNX_INPUT_HISTORY: np.array([history], dtype=np.int64),
                                ONNX_INPUT_CANDIDATES: candidates[None, :]})[0][0].copy()
    seen = np.flatnonzero(np.isin(candidates, history))
    scores[seen] = -np.inf
    return np.argsort(-scores, kind="stable")[:10]


def agreement(served: bytes, variant: bytes, histories: list[list[int]], candidates: np.ndarray) -> dict[str, float]:
    """Share of histories with the served graph's exact top-10 and its rank 1."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    a = ort.InferenceSession(served, options, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(variant, options, providers=["CPUExecutionProvider"])
    top10 = top1 = 0
    for history in histories:
        ta, tb = _top10(a, history, candidates), _top10(b, history, candidates)
        top10 += bool(np.array_equal(ta, tb))
        top1 += bool(ta[0] == tb[0])
    n = max(1, len(histories))
    return {"top10_identical": top10 / n, "rank1_identical": top1 / n}


def smallest_with_parity(served: bytes, histories: list[list[int]], candidates: np.ndarray,
                         min_top10: float = 0.99) -> tuple[str, bytes, list[dict[str, Any]]]:
    """(name, graph, trials): the smallest variant that keeps parity, the served graph when none does or when
    there are no histories to check with."""
    trials: list[dict[str, Any]] = [{"variant": "served", "bytes": len(served), "kept": True}]
    best = ("served", served)
    if not histories:
        return best[0], best[1], trials
    for storage in STORAGE:
        graph = shrink(served, storage)
        if graph is None:
            continue
        scores = agreement(served, graph, histories, candidates)
        ok = scores["top10_identical"] >= min_top10 and scores["rank1_identical"] == 1.0
        trials.append({"variant": storage, "bytes": len(graph), **scores, "kept": ok})
        if ok and len(graph) < len(best[1]):
            best = (storage, graph)
    for trial in trials:
        trial["kept"] = trial["variant"] == best[0]
    return best[0], best[1], trials
