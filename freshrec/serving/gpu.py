"""CUDA execution: IOBinding with pre-allocated device buffers per padded batch size, optional CUDA graphs.

Selected only when the CUDA EP really holds the session (``scorers.build_scorer``). Requests of the
shared shape (the whole catalogue or the retrieval set) are padded to the next bucket size and copied into
fixed device buffers, which is what CUDA graph replay needs (one graph per bucket, ``gpu_graph_id``).
Other shapes (``/v1/score`` with arbitrary item lists) take a plain IOBinding run without a graph.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from freshrec.core.errors import ArtifactIntegrityError
from freshrec.core.schemas import ONNX_INPUT_CANDIDATES, ONNX_INPUT_HISTORY, ONNX_OUTPUT_SCORES, PAD_INDEX
from freshrec.core.settings import ServingSettings
from freshrec.serving.execution import CUDA, TENSORRT, check_signature

log = logging.getLogger(__name__)


def bucket_sizes(max_batch: int) -> list[int]:
    """Powers of two up to the first one >= max_batch: few shapes to capture, at most 2x padding."""
    sizes = [1]
    while sizes[-1] < max_batch:
        sizes.append(sizes[-1] * 2)
    return sizes


@dataclass
class _BoundShape:
    """Device buffers, host staging arrays and the binding for one padded batch size."""

    host_history: np.ndarray
    host_candidates: np.ndarray
    history: ort.OrtValue
    candidates: ort.OrtValue
    scores: ort.OrtValue
    binding: ort.IOBinding
    run_options: ort.RunOptions


class CudaScorer:
    def __init__(
        self, session: ort.InferenceSession, max_batch: int, history_length: int, n_shared: int, cuda_graphs: bool
    ) -> None:
        self._session = session
        self.provider = session.get_providers()[0]  # TensorRT when it took the graph, else CUDA
        self._history_length = history_length
        self._n_shared = n_shared
        self.graphs = cuda_graphs  # False after a fallback: some node could not be captured
        out_type = session.get_outputs()[0].type
        self._out_dtype = np.float16 if out_type == "tensor(float16)" else np.float32
        self._buckets = bucket_sizes(max_batch)
        self._bound = {b: self._bind(b, graph_id=i if cuda_graphs else -1) for i, b in enumerate(self._buckets)}
        self._plain_options = ort.RunOptions()
        self._plain_options.add_run_config_entry("gpu_graph_id", "-1")
        # One IOBinding per shape is reused across calls: serialise calls on it.
        self._lock = threading.Lock()

    def _bind(self, batch: int, graph_id: int) -> _BoundShape:
        shape_h, shape_c = [batch, self._history_length], [batch, self._n_shared]
        history = ort.OrtValue.ortvalue_from_shape_and_type(shape_h, np.int64, "cuda", 0)
        candidates = ort.OrtValue.ortvalue_from_shape_and_type(shape_c, np.int64, "cuda", 0)
        scores = ort.OrtValue.ortvalue_from_shape_and_type(shape_c, self._out_dtype, "cuda", 0)
        binding = self._session.io_binding()
        binding.bind_ortvalue_input(ONNX_INPUT_HISTORY, history)
        binding.bind_ortvalue_input(ONNX_INPUT_CANDIDATES, candidates)
        binding.bind_ortvalue_output(ONNX_OUTPUT_SCORES, scores)
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("gpu_graph_id", str(graph_id))
        return _BoundShape(
            host_history=np.full(shape_h, PAD_INDEX, dtype=np.int64),
            host_candidates=np.full(shape_c, PAD_INDEX, dtype=np.int64),
            history=history,
            candidates=candidates,
            scores=scores,
            binding=binding,
            run_options=run_options,
        )

    def capture(self) -> None:
        """Run every bucket once: with CUDA graphs on, this is when each graph is captured."""
        for bucket in self._buckets:
            self.score(np.ones((bucket, 1), dtype=np.int64), np.ones((bucket, self._n_shared), dtype=np.int64))

    def score(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        batch, n_candidates = candidates.shape
        if n_candidates != self._n_shared or batch > self._buckets[-1]:
            return self._score_unbound(history, candidates)
        bucket = next(b for b in self._buckets if b >= batch)
        bound = self._bound[bucket]
        with self._lock:
            width = min(history.shape[1], self._history_length)
            bound.host_history.fill(PAD_INDEX)
            bound.host_history[:batch, self._history_length - width:] = history[:, history.shape[1] - width:]
            bound.host_candidates[:batch] = candidates
            bound.host_candidates[batch:] = PAD_INDEX
            bound.history.update_inplace(bound.host_history)
            bound.candidates.update_inplace(bound.host_candidates)
            self._session.run_with_iobinding(bound.binding, bound.run_options)
            scores = bound.scores.numpy()[:batch]
        return scores.astype(np.float32, copy=self._out_dtype != np.float32)

    def _score_unbound(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        binding = self._session.io_binding()
        binding.bind_cpu_input(ONNX_INPUT_HISTORY, np.ascontiguousarray(history))
        binding.bind_cpu_input(ONNX_INPUT_CANDIDATES, np.ascontiguousarray(candidates))
        binding.bind_output(ONNX_OUTPUT_SCORES, "cuda")
        self._session.run_with_iobinding(binding, self._plain_options)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)


def _provider_options(provider: str, settings: ServingSettings, artifact: Path) -> dict[str, str]:
    if provider == CUDA:
        options = {"device_id": "0", "arena_extend_strategy": "kSameAsRequested"}
        if settings.cuda_graphs:
            options["enable_cuda_graph"] = "1"
        return options
    if provider == TENSORRT:
        return {
            "trt_fp16_enable": "True",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(artifact.parent / ".trt-cache"),
        }
    return {}


def build_cuda_scorer(
    artifact: Path, settings: ServingSettings, providers: list[str], history_length: int, n_shared: int
) -> CudaScorer | None:
    """A CUDA scorer, or None when the CUDA EP did not take the session (no usable GPU).

    CUDA graphs need every node on the CUDA EP: ORT refuses such a session outright (an int8 graph's
    DynamicQuantizeLinear runs on the CPU, say), and capture can fail later; both fall back to plain
    IOBinding with a warning, and ``scorer.graphs`` says which one serves.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(artifact), options, providers=[(p, _provider_options(p, settings, artifact)) for p in providers]
        )
        if not {CUDA, TENSORRT} & set(session.get_providers()):
            return None
        check_signature(session, artifact)
        scorer = CudaScorer(session, settings.max_batch, history_length, n_shared, settings.cuda_graphs)
        scorer.capture()
        return scorer
    except Exception as exc:  # noqa: BLE001 - graph capture needs every node on CUDA; fall back to plain IOBinding
        if not settings.cuda_graphs or isinstance(exc, ArtifactIntegrityError):
            raise
        log.warning("CUDA graphs unavailable for %s (%s); using IOBinding without graphs", artifact, exc)
        return build_cuda_scorer(artifact, settings.model_copy(update={"cuda_graphs": False}), providers, history_length, n_shared)
