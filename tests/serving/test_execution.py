"""ONNX Runtime execution: provider choice, sessions from verified bytes, signature and checksum checks."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from freshrec.core.errors import ArtifactIntegrityError, ConfigError
from freshrec.core.settings import ServingSettings
from freshrec.serving.execution import CPU, CpuScorer, choose_providers, cpu_session, cuda_device_count, warm_up
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


def test_a_graph_replaced_in_place_is_served_as_the_new_graph_or_refused(tmp_path) -> None:
    """Same path, new content (a re-published version, a swapped or damaged file): the session scores like
    the bytes it verified, never like a copy derived from the old ones, and nothing is written beside it."""
    artifact = tmp_path / "student.int8.onnx"
    history = np.array([[0, 0, 3, 7]], dtype=np.int64)
    candidates = np.arange(1, 31, dtype=np.int64)[None]
    scores = {}
    for seed in (3, 4):
        onnx.save(scoring_model(30, seed=seed), artifact)
        scores[seed] = CpuScorer(cpu_session(artifact, _sha(artifact), ServingSettings())).score(history, candidates)
    assert not np.allclose(scores[3], scores[4])
    onnx.save(scoring_model(30, seed=3), artifact)
    old_sha = _sha(artifact)
    first = build_scorer(artifact, old_sha, ServingSettings(), [CPU], history_length=8, n_shared=30)
    np.testing.assert_allclose(first.score(history, candidates), scores[3], rtol=1e-6)
    onnx.save(scoring_model(30, seed=4), artifact)  # replaced in place
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        cpu_session(artifact, old_sha, ServingSettings())  # the registry still expects the old bytes
    second = build_scorer(artifact, _sha(artifact), ServingSettings(), [CPU], history_length=8, n_shared=30)
    np.testing.assert_allclose(second.score(history, candidates), scores[4], rtol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [artifact.name]
    warm_up(second, candidates[0], history_length=8, max_batch=4)


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
