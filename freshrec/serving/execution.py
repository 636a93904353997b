"""ONNX Runtime execution: provider choice, tuned session options, sessions from verified bytes, warm-up.

One ``Scorer`` per loaded model version. The CPU path is a plain ``session.run`` (fastest for small
inputs); when the CUDA EP is really usable the session goes to ``freshrec.serving.gpu.CudaScorer`` (IOBinding,
pre-allocated device buffers, optional CUDA graphs); ``freshrec.serving.scorers.build_scorer`` picks one.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from freshrec.core.accel import cuda_device_count
from freshrec.core.errors import ArtifactIntegrityError, ConfigError
from freshrec.core.schemas import ONNX_INPUT_CANDIDATES, ONNX_INPUT_HISTORY, ONNX_OUTPUT_SCORES
from freshrec.core.settings import ServingSettings

log = logging.getLogger(__name__)

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


class Scorer(Protocol):
    provider: str

    def score(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """history int64 [B, L], candidates int64 [B, C] -> float32 [B, C]."""


def choose_providers(configured: list[str] | None) -> list[str]:
    """Configured providers (validated), else TensorRT (when its runtime is present) -> CUDA -> CPU."""
    available = ort.get_available_providers()
    if configured:
        missing = [p for p in configured if p not in available]
        if missing:
            raise ConfigError(f"serving.providers names {missing}, not in this onnxruntime build ({available})")
        return list(configured)
    chosen: list[str] = []
    if cuda_device_count() > 0:
        _preload_cuda_libraries()
        if TENSORRT in available and ctypes.util.find_library("nvinfer"):
            chosen.append(TENSORRT)
        if CUDA in available:
            chosen.append(CUDA)
    return [*chosen, CPU]


def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* pip packages (onnxruntime-gpu[cuda,cudnn]) before the CUDA EP needs
    them; libraries already on the loader path make this a no-op. torch is never imported here."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # noqa: BLE001 - best effort: the system's libraries may still serve
        log.info("onnxruntime.preload_dlls() failed (%s); relying on the system's CUDA libraries", exc)


def default_variant(providers: list[str]) -> str:
    """int8 pays off on VNNI CPUs; on a GPU fp16 is the fast format (int8 needs TensorRT calibration)."""
    return "fp16" if providers[0] in (CUDA, TENSORRT) else "int8"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_artifact(path: Path, expected_sha256: str) -> None:
    if not path.is_file():
        raise ArtifactIntegrityError(f"artifact {path} is missing")
    _check_sha256(path, sha256_of(path), expected_sha256)


def _check_sha256(path: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise ArtifactIntegrityError(
            f"artifact {path} has sha256 {actual[:12]}..., the registry expects {expected[:12]}...",
            details={"path": str(path), "expected": expected, "actual": actual},
        )


def _cpu_session_options(settings: ServingSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning worker threads would steal the core the event loop needs on a small box.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def cpu_session(artifact: Path, sha256: str, settings: ServingSettings) -> ort.InferenceSession:
    """A CPU session built from the bytes just read and checked against ``sha256``, so what runs is what the
    registry verified: no path is opened twice (a file replaced in between cannot slip in) and no derived
    copy is trusted. ORT optimises the graph at creation; an on-disk optimised copy saved about 1 ms per
    session on the int8 student (1.4 ms -> 0.5 ms) and was a second artefact to keep honest, so none is kept.
    """
    try:
        graph = artifact.read_bytes()
    except FileNotFoundError:
        raise ArtifactIntegrityError(f"artifact {artifact} is missing") from None
    _check_sha256(artifact, hashlib.sha256(graph).hexdigest(), sha256)
    options = _cpu_session_options(settings)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(graph, options, providers=[CPU])


def check_signature(session: ort.InferenceSession, artifact: Path) -> None:
    inputs = {i.name: i.type for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    expected = {ONNX_INPUT_HISTORY: "tensor(int64)", ONNX_INPUT_CANDIDATES: "tensor(int64)"}
    if inputs != expected or ONNX_OUTPUT_SCORES not in outputs:
        raise ArtifactIntegrityError(
            f"{artifact} does not follow the scoring signature: inputs {inputs}, outputs {sorted(outputs)}"
        )


class CpuScorer:
    provider = CPU

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self._outputs = [ONNX_OUTPUT_SCORES]

    def score(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        scores = self._session.run(self._outputs, {ONNX_INPUT_HISTORY: history, ONNX_INPUT_CANDIDATES: candidates})[0]
        return scores if scores.dtype == np.float32 else scores.astype(np.float32)


def warm_up(scorer: Scorer, candidates: np.ndarray, history_length: int, max_batch: int, rounds: int = 3) -> None:
    """Run the shapes live traffic will use so the first real request pays no allocation or capture cost."""
    rng = np.random.default_rng(0)
    high = int(candidates.max()) + 1 if candidates.size else 2
    for batch in sorted({1, min(2, max_batch), max_batch}):
        history = rng.integers(1, high, size=(batch, history_length), dtype=np.int64)
        shared = np.broadcast_to(candidates, (batch, candidates.size)).copy()
        for _ in range(rounds):
            scores = scorer.score(history, shared)
        if scores.shape != (batch, candidates.size) or not np.isfinite(scores).all():
            raise ArtifactIntegrityError(f"warm-up produced scores of shape {scores.shape} or non-finite values")
