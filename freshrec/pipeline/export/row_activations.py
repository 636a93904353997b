"""One activation scale per row in dynamically quantised graphs, so a user's scores do not depend on the batch.

ORT's dynamic quantisation puts a ``DynamicQuantizeLinear`` before each integer MatMul: one scale and zero
point for the whole input tensor, i.e. for every row of a batch together. Serving micro-batches concurrent
requests, so with it a user's scores moved with whoever else was asking at that moment (up to 0.02 on the
tiny test model, enough to reorder near ties in a top-10). This pass gives every row its own:

- a 2-D input whose MatMulInteger has constant weights (every MatMul of the student): each row quantised
  exactly as DynamicQuantizeLinear quantises a batch of one (range [min(x, 0), max(x, 0)] over 255 levels,
  zero point round(-min / scale)) with per-axis QuantizeLinear; MatMulInteger takes a single zero point for
  its A side, so it runs with 0 and ``zero_point_row * column_sums(W - w_zero_point)`` is subtracted after
  (exact integer arithmetic). A request scored alone gets the very scores it got before this pass;
- any other input: a symmetric per-row quantisation (``scale = max|x_row| / 127``, uint8 around 128).

The scale output, now ``[..., 1]``, broadcasts in the unchanged Mul that rescales the integer product.
Cost, ML-100K student on one core: about 34 -> 56 us a single request (ORT runs ~11 small nodes per MatMul
where it had fused DynamicQuantizeMatMul), 0.25 -> 0.33 ms a batch of 32; a few percent of a request's
server time, for answers that no longer depend on the traffic around them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from freshrec.pipeline.export.row_tables import _index_ranks, _readers

ZERO_POINT = 128  # uint8 code of 0.0: symmetric codes 1..255 around it
EPS = 1e-12  # an all-zero row: scale EPS / 127, every code 128 (exactly 0.0)


def _replaceable(node: onnx.NodeProto, readers: dict[str, list[tuple[onnx.NodeProto, int]]]) -> bool:
    """The quantised tensor and its zero point feed only MatMulInteger's A side; the scale only a Mul."""
    quantised, scale, zero_point = node.output
    return (all(n.op_type == "MatMulInteger" and slot == 0 for n, slot in readers.get(quantised, []))
            and all(n.op_type == "MatMulInteger" and slot == 2 for n, slot in readers.get(zero_point, []))
            and all(n.op_type == "Mul" for n, _ in readers.get(scale, [])))


def _weight_column_sums(init: dict[str, onnx.TensorProto], matmul: onnx.NodeProto) -> np.ndarray | None:
    """sum_k (Wq[k, n] - w_zero_point) for a MatMulInteger whose B side is constant (int32, one per column)."""
    if len(matmul.input) < 4 or matmul.input[1] not in init or matmul.input[3] not in init:
        return None
    weights = numpy_helper.to_array(init[matmul.input[1]]).astype(np.int32)
    zero_point = numpy_helper.to_array(init[matmul.input[3]]).astype(np.int32)
    if weights.ndim != 2:
        return None
    return (weights - zero_point).sum(axis=0).astype(np.int32)


def _matrix_rows(tag: str, x: str, quantised: str, scale: str, zero_point_rows: str) -> list[onnx.NodeProto]:
    """A 2-D input, each row as DynamicQuantizeLinear does the whole tensor: range [min(x, 0), max(x, 0)] over
    255 levels, zero point round(-min / scale); one QuantizeLinear per-axis (ORT's vectorised kernel)."""
    return [
        helper.make_node("ReduceMax", [x, "row_quant/axes"], [f"{tag}/max"], name=f"{tag}/max", keepdims=0),
        helper.make_node("ReduceMin", [x, "row_quant/axes"], [f"{tag}/min"], name=f"{tag}/min", keepdims=0),
        helper.make_node("Relu", [f"{tag}/max"], [f"{tag}/hi"], name=f"{tag}/hi"),  # max(x, 0)
        helper.make_node("Neg", [f"{tag}/min"], [f"{tag}/neg_min"], name=f"{tag}/neg_min"),
        helper.make_node("Relu", [f"{tag}/neg_min"], [f"{tag}/neg_lo"], name=f"{tag}/neg_lo"),  # -min(x, 0)
        helper.make_node("Add", [f"{tag}/hi", f"{tag}/neg_lo"], [f"{tag}/range"], name=f"{tag}/range"),
        helper.make_node("Div", [f"{tag}/range", "row_quant/levels"], [f"{tag}/raw_scale"], name=f"{tag}/raw_scale"),
        helper.make_node("Max", [f"{tag}/raw_scale", "row_quant/eps"], [f"{tag}/row_scale"], name=f"{tag}/row_scale"),
        # zero point = saturate(round(-min / scale)) as uint8: a QuantizeLinear of -min (its zero point defaults to 0)
        helper.make_node("QuantizeLinear", [f"{tag}/neg_lo", f"{tag}/row_scale"], [zero_point_rows], name=f"{tag}/zp", axis=0),
        helper.make_node("QuantizeLinear", [x, f"{tag}/row_scale", zero_point_rows], [quantised], name=f"{tag}/quantise", axis=0),
        helper.make_node("Unsqueeze", [f"{tag}/row_scale", "row_quant/last"], [scale], name=f"{tag}/scale"),
    ]


def _correct_zero_points(tag: str, matmul: onnx.NodeProto, zero_point_rows: str, sums: str) -> list[onnx.NodeProto]:
    """MatMulInteger takes one zero point for A: it runs with 0 and ``zp_row * column sums`` comes off after."""
    product = matmul.output[0]
    matmul.output[0] = f"{tag}/uncorrected"
    return [
        helper.make_node("Cast", [zero_point_rows], [f"{tag}/zp_int"], name=f"{tag}/zp_int", to=TensorProto.INT32),
        helper.make_node("Unsqueeze", [f"{tag}/zp_int", "row_quant/last"], [f"{tag}/zp_col"], name=f"{tag}/zp_col"),
        helper.make_node("Mul", [f"{tag}/zp_col", sums], [f"{tag}/correction"], name=f"{tag}/correction"),
        helper.make_node("Sub", [f"{tag}/uncorrected", f"{tag}/correction"], [product], name=f"{tag}/corrected"),
    ]


def _any_rank_rows(tag: str, x: str, quantised: str, scale: str, opset: int) -> list[onnx.NodeProto]:
    """Any rank or opset: a symmetric per-row (last axis) quantisation from elementwise nodes, to uint8 around 128."""
    return [
        helper.make_node("Abs", [x], [f"{tag}/abs"], name=f"{tag}/abs"),
        # ReduceMax takes its axes as an input from opset 18, as an attribute before.
        helper.make_node("ReduceMax", [f"{tag}/abs", "row_quant/axes"], [f"{tag}/max"], name=f"{tag}/max", keepdims=1)
        if opset >= 18 else
        helper.make_node("ReduceMax", [f"{tag}/abs"], [f"{tag}/max"], name=f"{tag}/max", keepdims=1, axes=[-1]),
        helper.make_node("Max", [f"{tag}/max", "row_quant/eps"], [f"{tag}/bounded"], name=f"{tag}/bounded"),
        helper.make_node("Mul", [f"{tag}/bounded", "row_quant/step"], [scale], name=f"{tag}/scale"),
        helper.make_node("Div", [x, scale], [f"{tag}/scaled"], name=f"{tag}/scaled"),
        helper.make_node("Round", [f"{tag}/scaled"], [f"{tag}/rounded"], name=f"{tag}/rounded"),
        helper.make_node("Add", [f"{tag}/rounded", "row_quant/offset"], [f"{tag}/shifted"], name=f"{tag}/shifted"),
        helper.make_node("Cast", [f"{tag}/shifted"], [quantised], name=f"{tag}/cast", to=TensorProto.UINT8),
    ]


def per_row_activations(model: onnx.ModelProto) -> int:
    """Rewrite ``model`` in place; returns how many DynamicQuantizeLinear nodes became per-row."""
    readers = _readers(model)
    graph = model.graph
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    ranks = _index_ranks(model)
    init = {t.name: t for t in graph.initializer}
    constants: dict[str, np.ndarray] = {
        "row_quant/axes": np.array([-1], dtype=np.int64),
        "row_quant/last": np.array([1], dtype=np.int64),
        "row_quant/eps": np.array(EPS, dtype=np.float32),
        "row_quant/step": np.array(1.0 / 127.0, dtype=np.float32),
        "row_quant/levels": np.array(255.0, dtype=np.float32),
        "row_quant/zero": np.array(0.0, dtype=np.float32),
        "row_quant/offset": np.array(float(ZERO_POINT), dtype=np.float32),
    }
    nodes: list[onnx.NodeProto] = []
    after: dict[str, list[onnx.NodeProto]] = {}  # MatMulInteger name -> nodes that must follow it
    replaced = 0
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type != "DynamicQuantizeLinear" or not _replaceable(node, readers):
            nodes.append(node)
            nodes += after.pop(node.name, []) if node.name else []
            continue
        x = node.input[0]
        quantised, scale, zero_point = node.output
        tag = f"row_quant/{node.name or x}"
        matmuls = [n for n, _ in readers.get(quantised, [])]
        found = [_weight_column_sums(init, m) for m in matmuls]
        sums = [column for column in found if column is not None]
        if ranks.get(x) == 2 and opset >= 18 and matmuls and len(sums) == len(matmuls) and all(m.name for m in matmuls):
            # Exactly what DynamicQuantizeLinear computes for a batch of one, for every row of any batch.
            graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.uint8), zero_point))
            nodes += _matrix_rows(tag, x, quantised, scale, f"{tag}/zero_points")
            for k, (matmul, column_sums) in enumerate(zip(matmuls, sums)):
                graph.initializer.append(numpy_helper.from_array(column_sums, f"{tag}/column_sums_{k}"))
                after.setdefault(matmul.name, []).extend(
                    _correct_zero_points(f"{tag}/{k}", matmul, f"{tag}/zero_points", f"{tag}/column_sums_{k}"))
        else:
            graph.initializer.append(numpy_helper.from_array(np.array(ZERO_POINT, dtype=np.uint8), zero_point))
            nodes += _any_rank_rows(tag, x, quantised, scale, opset)
        replaced += 1
    if replaced:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for node in nodes for name in node.input}
        graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items() if name in used)
    return replaced
