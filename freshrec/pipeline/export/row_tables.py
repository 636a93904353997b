"""int8 embedding tables with one scale per row, for the served int8 graph (pure computation on ONNX models).

ORT's own Gather quantisation (the ``embeddings`` recipe) stores a table with one scale for all of it: rows
of rarely taken items, with small vectors, then keep few significant levels. One symmetric scale per row
keeps every row's relative precision (at most half a step of 1/127 of its largest value).

A table qualifies when it is a float32 initializer of rank 2 read only by Gather on axis 0. Each Gather
becomes Gather(int8 rows) -> DequantizeLinear(scale 1) (ORT's vectorised int8 -> float; a Cast costs more),
and the row scales are applied where they cost least:

- folded: when every reader of the gathered rows is a MatMul taking them as its right operand
  ``A[..., M, L] @ rows[..., L, D]`` (the student's pooling, a row of ones times the history's vectors),
  ``A @ (s * Q) = (A * s^T) @ Q``: the scales multiply A (L values per row), not the rows (L x D);
- otherwise: Mul of the rows by their gathered scales (a broadcast over L x D that ORT's CPU kernel
  handles slowly: about 10 us per request for 256 x 64 rows on this box).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MIN_TABLE_VALUES = 4096  # smaller tables are not worth the extra nodes


def _readers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for slot, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, slot))
    return readers


def _axis(node: onnx.NodeProto) -> int:
    return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "axis"), 0)


def _tables(model: onnx.ModelProto, readers: dict[str, list[tuple[onnx.NodeProto, int]]]) -> list[onnx.TensorProto]:
    graph_inputs = {i.name for i in model.graph.input}
    return [t for t in model.graph.initializer
            if t.data_type == TensorProto.FLOAT and len(t.dims) == 2 and int(np.prod(t.dims)) >= MIN_TABLE_VALUES
            and t.name not in graph_inputs and readers.get(t.name)
            and all(n.op_type == "Gather" and slot == 0 and _axis(n) == 0 for n, slot in readers[t.name])]


def quantise_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 rows, float32 scale per row), symmetric: row r is ``q[r] * scale[r]``; an all-zero row gets scale 1."""
    scale = (np.abs(table).max(axis=1) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    return np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8), scale


def _index_ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}


def quantise_row_tables(model: onnx.ModelProto) -> list[str]:
    """Store every qualifying gathered table as int8 rows + row scales, in place; the names of those tables."""
    readers = _readers(model)
    tables = _tables(model, readers)
    if not tables:
        return []
    ranks = _index_ranks(model)
    model.graph.initializer.extend([numpy_helper.from_array(np.array(1.0, np.float32), "row_tables_unit_scale"),
                                    numpy_helper.from_array(np.array(0, np.int8), "row_tables_zero_point")])
    for table in tables:
        q, scale = quantise_rows(numpy_helper.to_array(table))
        rows, scales = f"{table.name}_rows_int8", f"{table.name}_row_scale"
        model.graph.initializer.remove(table)
        model.graph.initializer.extend([numpy_helper.from_array(q, rows), numpy_helper.from_array(scale, scales)])
        for gather, _ in readers[table.name]:
            _rewrite(model, gather, rows, scales, readers.get(gather.output[0], []), ranks.get(gather.input[1], 0))
    _sort_topologically(model)
    return [t.name for t in tables]


def _rewrite(model: onnx.ModelProto, gather: onnx.NodeProto, rows: str, scales: str,
             users: list[tuple[onnx.NodeProto, int]], index_rank: int) -> None:
    out, index, prefix = gather.output[0], gather.input[1], gather.name or gather.output[0]
    foldable = index_rank >= 1 and bool(users) and all(n.op_type == "MatMul" and slot == 1 for n, slot in users)
    gathered = f"{prefix}_rows_int8"
    values = out if foldable else f"{prefix}_rows_unscaled"
    nodes = [
        helper.make_node("Gather", [rows, index], [gathered], name=f"{prefix}_rows", axis=0),
        helper.make_node("DequantizeLinear", [gathered, "row_tables_unit_scale", "row_tables_zero_point"], [values],
                         name=f"{prefix}_rows_float"),
        helper.make_node("Gather", [scales, index], [f"{prefix}_scale"], name=f"{prefix}_scale", axis=0),
    ]
    axis = _constant(model, f"row_tables_axis_{-2 if foldable else -1}", np.array([-2 if foldable else -1], np.int64))
    if foldable:  # A @ (s * Q) = (A * s^T) @ Q: scale the MatMuls' left operands over L
        nodes.append(helper.make_node("Unsqueeze", [f"{prefix}_scale", axis], [f"{prefix}_scale_row"],
                                      name=f"{prefix}_scale_row"))
        for k, (matmul, _) in enumerate(users):
            scaled = f"{prefix}_scaled_left_{k}"
            nodes.append(helper.make_node("Mul", [matmul.input[0], f"{prefix}_scale_row"], [scaled], name=scaled))
            matmul.input[0] = scaled
    else:
        nodes += [helper.make_node("Unsqueeze", [f"{prefix}_scale", axis], [f"{prefix}_scale_col"],
                                   name=f"{prefix}_scale_col"),
                  helper.make_node("Mul", [values, f"{prefix}_scale_col"], [out], name=f"{prefix}_rows_scaled")]
    position = list(model.graph.node).index(gather)
    model.graph.node.remove(gather)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(position + offset, node)


def _constant(model: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    if all(t.name != name for t in model.graph.initializer):
        model.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _sort_topologically(model: onnx.ModelProto) -> None:
    """A folded Mul reads the MatMul's left operand, which may be computed after the Gather: reorder."""
    available = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError("row tables: the rewritten graph has a cycle")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
