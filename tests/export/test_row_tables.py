"""int8 embedding tables with one scale per row: the rewritten graph computes what the dequantised table would."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tests.serving.builders import scoring_model


def _pooling_model(n_items: int = 300, dim: int = 32, seed: int = 0) -> onnx.ModelProto:
    """The student's pooling: a weight row [B, 1, L] times the history's vectors [B, L, D], then scores."""
    rng = np.random.default_rng(seed)
    table = (rng.normal(0, 0.3, size=(n_items + 1, dim)) * rng.uniform(0.05, 3, size=(n_items + 1, 1))).astype(np.float32)
    table[0] = 0.0
    out = rng.normal(0, 0.3, size=(dim, n_items + 1)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["history"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["ones"], value=numpy_helper.from_array(np.ones(1, np.float32))),
        helper.make_node("Unsqueeze", ["ones", "axis1"], ["weights"]),
        helper.make_node("Gather", ["item_in", "history"], ["embedded"], axis=0),
        helper.make_node("MatMul", ["weights", "embedded"], ["pooled3"]),
        helper.make_node("Squeeze", ["pooled3", "axis1"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "item_out"], ["logits"]),
        helper.make_node("GatherElements", ["logits", "candidates"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "pooling",
        [helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", "history_len"]),
         helper.make_tensor_value_info("candidates", TensorProto.INT64, ["batch", "n_candidates"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "n_candidates"])],
        [numpy_helper.from_array(table, "item_in"), numpy_helper.from_array(out, "item_out"),
         numpy_helper.from_array(np.array([1], np.int64), "axis1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _dequantised(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """The same model with table ``name`` replaced by its int8-rows round trip (the reference)."""
    from freshrec.pipeline.export.row_tables import quantise_rows

    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    table = next(t for t in reference.graph.initializer if t.name == name)
    q, scale = quantise_rows(numpy_helper.to_array(table))
    table.CopyFrom(numpy_helper.from_array(q.astype(np.float32) * scale[:, None], name))
    return reference


def _scores(model: onnx.ModelProto, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"history": history, "candidates": candidates})[0]


def _inputs(n_items: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    history = rng.integers(1, n_items + 1, size=(4, 23), dtype=np.int64)
    history[0, :10] = 0  # padding
    return history, rng.integers(1, n_items + 1, size=(4, 50), dtype=np.int64)


def test_row_scales_fold_into_the_pooling_matmul() -> None:
    from freshrec.pipeline.export.row_tables import quantise_row_tables

    model = _pooling_model()
    reference = _dequantised(model, "item_in")
    assert quantise_row_tables(model) == ["item_in"]
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "Gather" in ops and "DequantizeLinear" in ops and ops.count("Mul") == 1  # scales on [B, 1, L]
    stored = {t.name: t.data_type for t in model.graph.initializer}
    assert stored["item_in_rows_int8"] == TensorProto.INT8 and "item_in" not in stored
    history, candidates = _inputs(300)
    expected, got = _scores(reference, history, candidates), _scores(model, history, candidates)
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-5)
    # per-row scales keep small rows precise: the int8 graph is close to fp32 for every history
    original = _scores(_pooling_model(), history, candidates)
    assert np.abs(got - original).max() < 0.02 * np.abs(original).max()


def test_other_readers_get_scaled_rows_and_small_or_shared_tables_stay() -> None:
    from freshrec.pipeline.export.row_tables import quantise_row_tables

    model = scoring_model(800, dim=16, seed=3)  # rows read by a Mul (masked mean) and a MatMul's left side
    reference = _dequantised(model, "item_emb")
    assert quantise_row_tables(model) == ["item_emb"]
    onnx.checker.check_model(model, full_check=True)
    history, candidates = _inputs(800)
    assert np.allclose(_scores(model, history, candidates), _scores(reference, history, candidates), rtol=1e-5, atol=1e-5)
    small = scoring_model(20, seed=1)  # 21 x 16 values: not worth the nodes
    assert quantise_row_tables(small) == []
    shared = _pooling_model()  # a table a MatMul also reads as a weight is left in fp32
    shared.graph.node.append(helper.make_node("MatMul", ["pooled", "item_in_t"], ["unused"]))
    shared.graph.node.insert(0, helper.make_node("Transpose", ["item_in"], ["item_in_t"]))
    assert quantise_row_tables(shared) == []


def test_the_row_tables_recipe_halves_the_student_and_keeps_its_ranking(tmp_path) -> None:
    from freshrec.pipeline.export.quantize import RECIPES, quantise_int8

    fp32 = tmp_path / "fp32.onnx"
    onnx.save(_pooling_model(n_items=600, dim=64), fp32)
    recipes = {r.name: r for r in RECIPES}
    plain = quantise_int8(fp32, tmp_path / "plain.onnx", recipes["dynamic"])
    rows = quantise_int8(fp32, tmp_path / "rows.onnx", recipes["dynamic_row_tables"])
    assert rows.stat().st_size < 0.6 * plain.stat().st_size
    history, candidates = _inputs(600)
    candidates = np.broadcast_to(np.arange(1, 601, dtype=np.int64), (4, 600)).copy()
    a = _scores(onnx.load(str(plain)), history, candidates)
    b = _scores(onnx.load(str(rows)), history, candidates)
    assert all(np.argmax(a[i]) == np.argmax(b[i]) for i in range(len(a)))
