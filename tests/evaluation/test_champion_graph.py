"""The champion is judged through its holdout-trained graph, not the served refit that saw the holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from freshrec.core.schemas import BUNDLE_VOCAB, ONNX_INPUT_CANDIDATES, ONNX_INPUT_HISTORY, ONNX_OUTPUT_SCORES
from freshrec.pipeline.evaluation.evaluate import champion_graph, champion_scorer
from freshrec.pipeline.training.dataset import Vocab

ITEMS = ["a", "b", "c", "d"]


def _fixed_scores_graph(path: Path, item_scores: list[float]) -> Path:
    """An ONNX graph following the bundle signature whose score for item i is ``item_scores[i - 1]``."""
    table = numpy_helper.from_array(np.array([0.0, *item_scores], dtype=np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", ONNX_INPUT_CANDIDATES], [ONNX_OUTPUT_SCORES], axis=0)],
        "fixed",
        [helper.make_tensor_value_info(ONNX_INPUT_HISTORY, TensorProto.INT64, ["batch", "history"]),
         helper.make_tensor_value_info(ONNX_INPUT_CANDIDATES, TensorProto.INT64, ["batch", "candidates"])],
        [helper.make_tensor_value_info(ONNX_OUTPUT_SCORES, TensorProto.FLOAT, ["batch", "candidates"])],
        [table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    Vocab(items=ITEMS, users=["u1"]).save(tmp_path / BUNDLE_VOCAB)
    _fixed_scores_graph(tmp_path / "student.int8.onnx", [1.0, 2.0, 3.0, 4.0])  # served: refit on all data
    _fixed_scores_graph(tmp_path / "student.eval.int8.onnx", [4.0, 3.0, 2.0, 1.0])  # holdout-trained
    _fixed_scores_graph(tmp_path / "student.fp32.onnx", [0.5, 0.5, 9.0, 0.5])
    return tmp_path


def test_champion_scorer_prefers_the_holdout_trained_graph(bundle: Path) -> None:
    grown = Vocab(items=[*ITEMS, "e"], users=["u1", "u2"])  # this run knows one more item
    history = np.array([[0, 1], [2, 5]], dtype=np.int64)
    scores = champion_scorer(bundle, grown)(history)
    assert champion_graph(bundle).name == "student.eval.int8.onnx"
    np.testing.assert_array_equal(scores[:, 1:5], [[4.0, 3.0, 2.0, 1.0]] * 2)
    assert np.isneginf(scores[:, 0]).all() and np.isneginf(scores[:, 5]).all()  # padding, unknown item


def test_older_bundles_fall_back_to_the_served_graph(bundle: Path) -> None:
    vocab = Vocab(items=ITEMS, users=["u1"])
    history = np.array([[1, 2]], dtype=np.int64)
    (bundle / "student.eval.int8.onnx").unlink()
    assert champion_graph(bundle).name == "student.int8.onnx"
    np.testing.assert_array_equal(champion_scorer(bundle, vocab)(history)[0, 1:], [1.0, 2.0, 3.0, 4.0])
    (bundle / "student.int8.onnx").unlink()
    np.testing.assert_array_equal(champion_scorer(bundle, vocab)(history)[0, 1:], [0.5, 0.5, 9.0, 0.5])
    (bundle / "student.fp32.onnx").unlink()
    with pytest.raises(FileNotFoundError):
        champion_graph(bundle)


def test_served_checks_join_the_gate_verdict() -> None:
    from freshrec.pipeline.evaluation.gates import decide, served_gates, with_gates

    gated = decide(0.3, (0.30, 0.30), 0.01, None, {"teacher": 1e-6, "student": 1e-6}, 0.0, 0.01, 0.01).to_dict()
    assert gated["passed"]
    good = served_gates((0.50, 0.50), 0.02, {"teacher": 2e-6, "student": 1e-6}, 0.01)
    verdict = with_gates(gated, good)
    assert verdict.passed and [g.name for g in verdict.gates][-2:] == ["served_int8_fidelity", "served_export_parity"]
    # a broken refit (int8 lost 10%) rejects the candidate; re-applying replaces, never duplicates
    bad = served_gates((0.45, 0.50), 0.9, {"teacher": 2e-6, "student": 1e-6}, 0.01)
    verdict = with_gates(verdict.to_dict(), bad)
    assert not verdict.passed
    assert [g.name for g in verdict.gates].count("served_int8_fidelity") == 1
    assert verdict.reasons == [f"served_int8_fidelity: {bad[0].detail}"] and "refit on all data" in bad[0].detail
