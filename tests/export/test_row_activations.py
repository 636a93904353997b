"""Per-row activation scales on graphs other than the student's: an input of rank 3 takes the generic path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def _matmul_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.normal(size=(16, 6)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "l", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "l", 6])], [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10), path)
    return path


def test_a_rank_3_input_is_quantised_per_row_and_batch_invariant(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from freshrec.pipeline.export.row_activations import per_row_activations

    fp32 = _matmul_model(tmp_path / "fp32.onnx")
    quantize_dynamic(str(fp32), str(tmp_path / "int8.onnx"), weight_type=QuantType.QInt8)
    model = onnx.load(str(tmp_path / "int8.onnx"))
    assert per_row_activations(model) == 1
    assert not any(n.op_type == "DynamicQuantizeLinear" for n in model.graph.node)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(5, 3, 16)).astype(np.float32)
    x[0] *= 50  # one row far wider than the rest: under one scale per batch it coarsens everyone else
    together = session.run(None, {"x": x})[0]
    alone = np.concatenate([session.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])
    np.testing.assert_array_equal(together, alone)
    session_fp32 = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    expected = session_fp32.run(None, {"x": x})[0]
    np.testing.assert_allclose(together[1:], expected[1:], atol=0.15)  # 8-bit steps of each row's own range
