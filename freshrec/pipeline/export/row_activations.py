"""One activation scale per row in dynamically quantised graphs, so a user's scores do not depend on the batch.

ORT's dynamic quantisation puts a ``DynamicQuantizeLinear`` before each integer MatMul: one scale and zero
point for the whole input tensor, i.e. for every row of a batch together. Serving micro-batches concurrent
requests, so with it a user's scores moved with whoever else was asking at that moment (up to 0.02 on the
tiny test model, enough to reorder near ties in a top-10). This pass replaces each such node by a symmetric
quantisation per row (the last axis): ``scale = max|x_row| / 127``, ``q = round(x / scale) + 128`` as uint8
with the scalar zero point 128 that ``MatMulInteger`` takes. The downstream nodes are unchanged: the scale
output, now shaped ``[..., 1]``, broadcasts in the ``Mul`` that rescales the integer product. A row's
result then depends on that row alone, and each row keeps its own precision instead of the batch's widest.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from freshrec.pipeline.export.row_tables import _readers

ZERO_POINT = 128  # uint8 code of 0.0: symmetric codes 1..255 around it
EPS = 1e-12  # an all-zero row: scale EPS / 127, every code 128 (exactly 0.0)


def _replaceable(node: onnx.NodeProto, readers: dict[str, list[tuple[onnx.NodeProto, int]]]) -> bool:
    """The quantised tensor and its zero point feed only MatMulInteger's A side; the scale only a Mul."""
    quantised, scale, zero_point = node.output
    return (all(n.op_type == "MatMulInteger" and slot == 0 for n, slot in readers.get(quantised, []))
            and all(n.op_type == "MatMulInteger" and slot == 2 for n, slot in readers.get(zero_point, []))
            and all(n.op_type == "Mul" for n, _ in readers.get(scale, [])))


def per_row_activations(model: onnx.ModelProto) -> int:
    """Rewrite ``model`` in place; returns how many DynamicQuantizeLinear nodes became per-row."""
    readers = _readers(model)
    graph = model.graph
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    constants = {
        "row_quant/axes": numpy_helper.from_array(np.array([-1], dtype=np.int64), "row_quant/axes"),
        "row_quant/eps": numpy_helper.from_array(np.array(EPS, dtype=np.float32), "row_quant/eps"),
        "row_quant/levels": numpy_helper.from_array(np.array(127.0, dtype=np.float32), "row_quant/levels"),
        "row_quant/offset": numpy_helper.from_array(np.array(float(ZERO_POINT), dtype=np.float32), "row_quant/offset"),
    }
    nodes: list[onnx.NodeProto] = []
    replaced = 0
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type != "DynamicQuantizeLinear" or not _replaceable(node, readers):
            nodes.append(node)
            continue
        x = node.input[0]
        quantised, scale, zero_point = node.output
        tag = f"row_quant/{node.name or x}"
        graph.initializer.append(numpy_helper.from_array(np.array(ZERO_POINT, dtype=np.uint8), zero_point))
        nodes += [
            helper.make_node("Abs", [x], [f"{tag}/abs"], name=f"{tag}/abs"),
            # ReduceMax takes its axes as an input from opset 18, as an attribute before.
            helper.make_node("ReduceMax", [f"{tag}/abs", "row_quant/axes"], [f"{tag}/max"], name=f"{tag}/max", keepdims=1)
            if opset >= 18 else
            helper.make_node("ReduceMax", [f"{tag}/abs"], [f"{tag}/max"], name=f"{tag}/max", keepdims=1, axes=[-1]),
            helper.make_node("Max", [f"{tag}/max", "row_quant/eps"], [f"{tag}/bounded"], name=f"{tag}/bounded"),
            helper.make_node("Div", [f"{tag}/bounded", "row_quant/levels"], [scale], name=f"{tag}/scale"),
            helper.make_node("Div", [x, scale], [f"{tag}/scaled"], name=f"{tag}/scaled"),
            helper.make_node("Round", [f"{tag}/scaled"], [f"{tag}/rounded"], name=f"{tag}/rounded"),
            helper.make_node("Add", [f"{tag}/rounded", "row_quant/offset"], [f"{tag}/shifted"], name=f"{tag}/shifted"),
            helper.make_node("Cast", [f"{tag}/shifted"], [quantised], name=f"{tag}/cast", to=TensorProto.UINT8),
        ]
        replaced += 1
    if replaced:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(constants.values())
    return replaced
