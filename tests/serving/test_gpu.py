"""The CUDA path of the serving tier (IOBinding, pre-allocated buffers, CUDA graphs, fp16).

These run only where a CUDA device and onnxruntime-gpu's CUDA EP are present (the lent GPU machine);
everywhere else they are skipped, and the rest of tests/serving covers the CPU path. On a GPU machine
the rest of tests/serving also runs on CUDA, since the server picks CUDA when a device is there.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from freshrec.core.settings import ServingSettings
from freshrec.serving.execution import CPU, CUDA, choose_providers, cuda_device_count, warm_up
from freshrec.serving.gpu import CudaScorer, bucket_sizes
from freshrec.serving.scorers import build_scorer
from tests.serving.builders import scoring_model

pytestmark = pytest.mark.skipif(
    cuda_device_count() == 0 or CUDA not in ort.get_available_providers(),
    reason="needs a CUDA device and onnxruntime-gpu's CUDA EP",
)

N_ITEMS, HISTORY = 300, 16


def _artifact(tmp_path, seed: int = 5):
    path = tmp_path / "student.fp32.onnx"
    onnx.save(scoring_model(N_ITEMS, dim=32, seed=seed), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _inputs(batch: int, n_candidates: int = N_ITEMS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    history = rng.integers(0, N_ITEMS + 1, size=(batch, HISTORY), dtype=np.int64)
    if n_candidates == N_ITEMS:
        candidates = np.broadcast_to(np.arange(1, N_ITEMS + 1, dtype=np.int64), (batch, N_ITEMS)).copy()
    else:
        candidates = rng.integers(1, N_ITEMS + 1, size=(batch, n_candidates), dtype=np.int64)
    return history, candidates


def test_cuda_is_chosen_when_a_device_is_present() -> None:
    providers = choose_providers(None)
    assert CUDA in providers and providers[-1] == CPU


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_scores_match_cpu_for_every_bucket(tmp_path, cuda_graphs: bool) -> None:
    artifact, sha = _artifact(tmp_path)
    settings = ServingSettings(max_batch=8, cuda_graphs=cuda_graphs)
    gpu = build_scorer(artifact, sha, settings, [CUDA, CPU], history_length=HISTORY, n_shared=N_ITEMS)
    cpu = build_scorer(artifact, sha, settings, [CPU], history_length=HISTORY, n_shared=N_ITEMS)
    assert isinstance(gpu, CudaScorer) and gpu.provider == CUDA
    assert gpu.graphs == cuda_graphs  # capture worked: no silent fallback to plain IOBinding
    warm_up(gpu, np.arange(1, N_ITEMS + 1, dtype=np.int64), HISTORY, settings.max_batch)
    for batch in (1, 2, 3, 5, 8):  # 3 and 5 are padded up to the 4 and 8 buckets
        history, candidates = _inputs(batch, seed=batch)
        got = gpu.score(history, candidates)
        assert got.shape == (batch, N_ITEMS) and got.dtype == np.float32
        np.testing.assert_allclose(got, cpu.score(history, candidates), rtol=1e-4, atol=1e-4)
    # the pre-allocated buffers are reused: a second call with other inputs must not see stale rows
    history, candidates = _inputs(3, seed=99)
    np.testing.assert_allclose(gpu.score(history, candidates), cpu.score(history, candidates), rtol=1e-4, atol=1e-4)


def test_other_shapes_take_the_unbound_path(tmp_path) -> None:
    """/v1/score with an arbitrary item list, and batches above the largest bucket."""
    artifact, sha = _artifact(tmp_path)
    settings = ServingSettings(max_batch=4)
    gpu = build_scorer(artifact, sha, settings, [CUDA, CPU], history_length=HISTORY, n_shared=N_ITEMS)
    cpu = build_scorer(artifact, sha, settings, [CPU], history_length=HISTORY, n_shared=N_ITEMS)
    for batch, n_candidates in ((1, 7), (2, 123), (max(bucket_sizes(4)) + 3, N_ITEMS)):
        history, candidates = _inputs(batch, n_candidates, seed=n_candidates)
        np.testing.assert_allclose(gpu.score(history, candidates), cpu.score(history, candidates), rtol=1e-4, atol=1e-4)


def test_fp16_variant_ranks_like_fp32(tmp_path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    artifact, sha = _artifact(tmp_path)
    fp16 = tmp_path / "student.fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(artifact), keep_io_types=True), fp16)
    fp16_sha = hashlib.sha256(fp16.read_bytes()).hexdigest()
    settings = ServingSettings(max_batch=8)
    half = build_scorer(fp16, fp16_sha, settings, [CUDA, CPU], history_length=HISTORY, n_shared=N_ITEMS)
    full = build_scorer(artifact, sha, settings, [CUDA, CPU], history_length=HISTORY, n_shared=N_ITEMS)
    history, candidates = _inputs(8, seed=1)
    a, b = half.score(history, candidates), full.score(history, candidates)
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2)
    overlap = [len(set(np.argsort(-x)[:10]) & set(np.argsort(-y)[:10])) for x, y in zip(a, b)]
    assert np.mean(overlap) >= 9.0


def test_cuda_graphs_fall_back_when_some_nodes_stay_on_the_cpu(tmp_path) -> None:
    """A dynamically quantised graph keeps DynamicQuantizeLinear on the CPU EP: ORT refuses graph capture
    for the session, and the scorer falls back to IOBinding without graphs instead of failing the load."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    artifact, sha = _artifact(tmp_path)
    int8 = tmp_path / "student.int8.onnx"
    quantize_dynamic(artifact, int8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"])
    int8_sha = hashlib.sha256(int8.read_bytes()).hexdigest()
    gpu = build_scorer(int8, int8_sha, ServingSettings(max_batch=4, cuda_graphs=True), [CUDA, CPU],
                       history_length=HISTORY, n_shared=N_ITEMS)
    cpu = build_scorer(int8, int8_sha, ServingSettings(max_batch=4), [CPU], history_length=HISTORY, n_shared=N_ITEMS)
    assert isinstance(gpu, CudaScorer)
    history, candidates = _inputs(3, seed=4)
    np.testing.assert_allclose(gpu.score(history, candidates), cpu.score(history, candidates), rtol=2e-2, atol=2e-2)
