"""Build the scorer of one model version: the CUDA one (``gpu``) when the CUDA EP holds the session, else the CPU one
(``execution``). Both lower modules stay unaware of each other's choice."""

from __future__ import annotations

import logging
from pathlib import Path

from freshrec.core.errors import ArtifactIntegrityError, FreshRecError
from freshrec.core.settings import ServingSettings
from freshrec.serving.execution import CUDA, TENSORRT, CpuScorer, Scorer, check_signature, cpu_session, verify_artifact
from freshrec.serving.gpu import build_cuda_scorer

log = logging.getLogger(__name__)


def build_scorer(
    artifact: Path, sha256: str, settings: ServingSettings, providers: list[str], history_length: int, n_shared: int
) -> Scorer:
    """A verified, signature-checked scorer on the best provider of ``providers``."""
    verify_artifact(artifact, sha256)
    try:
        if providers[0] in (CUDA, TENSORRT):
            scorer = build_cuda_scorer(artifact, settings, providers, history_length, n_shared)
            if scorer is not None:
                return scorer
            log.warning("CUDA EP did not take %s; serving it on CPU", artifact)
        session = cpu_session(artifact, sha256, settings)
    except FreshRecError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime's load errors (Fail, InvalidProtobuf, ...) share no base
        raise ArtifactIntegrityError(f"ONNX Runtime cannot load {artifact}: {exc}") from exc
    check_signature(session, artifact)
    return CpuScorer(session)
