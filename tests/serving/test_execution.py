"""ONNX Runtime execution: provider choice, the saved optimised model, signature and checksum checks."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from freshrec.core.errors import ArtifactIntegrityError, ConfigError
from freshrec.core.settings import ServingSettings
from freshrec.serving.execution import CPU, choose_providers, cuda_device_count, warm_up
from freshrec.serving.gpu import bucket_sizes
from freshrec.serving.scorers import build_scorer
from tests.serving.builders import scoring_model


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_providers_fall_back_to_cpu_without_a_gpu() -> None:
    providers = choose_providers(None)
    assert providers[-1] == CPU
    if cuda_device_count() == 0:
        assert providers == [CPU]
    with pytest.raises(ConfigError, match="NoSuchExecutionProvider"):
        choose_providers(["NoSuchExecutionProvider"])


def test_optimised_model_is_saved_and_reused(tmp_path) -> None:
    artifact = tmp_path / "student.fp32.onnx"
    onnx.save(scoring_model(30, seed=3), artifact)
    sha = _sha(artifact)
    first = build_scorer(artifact, sha, ServingSettings(), [CPU], history_length=8, n_shared=30)
    optimised = list(tmp_path.glob("student.fp32.*.cpu.opt.onnx"))
    assert len(optimised) == 1 and optimised[0].with_name(optimised[0].name + ".sha256").is_file()
    history = np.array([[0, 0, 3, 7]], dtype=np.int64)
    candidates = np.arange(1, 31, dtype=np.int64)[None]
    expected = first.score(history, candidates)
    second = build_scorer(artifact, sha, ServingSettings(), [CPU], history_length=8, n_shared=30)
    np.testing.assert_allclose(second.score(history, candidates), expected, rtol=1e-6)
    # a damaged optimised copy is rebuilt from the verified artifact, never trusted
    optimised[0].write_bytes(b"garbage")
    third = build_scorer(artifact, sha, ServingSettings(), [CPU], history_length=8, n_shared=30)
    np.testing.assert_allclose(third.score(history, candidates), expected, rtol=1e-6)
    warm_up(third, candidates[0], history_length=8, max_batch=4)


def test_checksum_mismatch_is_refused(tmp_path) -> None:
    artifact = tmp_path / "student.fp32.onnx"
    onnx.save(scoring_model(10), artifact)
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        build_scorer(artifact, "0" * 64, ServingSettings(), [CPU], history_length=8, n_shared=10)
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        build_scorer(tmp_path / "absent.onnx", "0" * 64, ServingSettings(), [CPU], history_length=8, n_shared=10)


def test_wrong_signature_is_refused(tmp_path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["scores"])], "wrong",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "n"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["b", "n"])],
    )
    artifact = tmp_path / "wrong.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, artifact)
    with pytest.raises(ArtifactIntegrityError, match="signature"):
        build_scorer(artifact, _sha(artifact), ServingSettings(), [CPU], history_length=8, n_shared=10)


def test_unloadable_file_with_a_matching_checksum_is_refused(tmp_path) -> None:
    artifact = tmp_path / "student.int8.onnx"
    artifact.write_bytes(b"not an onnx model")
    with pytest.raises(ArtifactIntegrityError, match="cannot load"):
        build_scorer(artifact, _sha(artifact), ServingSettings(), [CPU], history_length=8, n_shared=10)


def test_cuda_graph_buckets_cover_the_max_batch() -> None:
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert bucket_sizes(48)[-1] == 64
