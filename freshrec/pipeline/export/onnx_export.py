"""torch -> ONNX with the dynamo exporter, onnx.checker, and an offline ORT graph optimisation pass.

The example batch has 2 rows and distinct history / candidate lengths so that no dimension is
specialised to a constant; every dimension is declared dynamic. The offline pass uses ORT's *basic*
level (constant folding, redundant node removal), which is portable across machines; the hardware-
specific fusions are left to the session that loads the model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from freshrec.core.errors import ArtifactIntegrityError
from freshrec.core.schemas import ONNX_INPUT_CANDIDATES, ONNX_INPUT_HISTORY, ONNX_OUTPUT_SCORES
from freshrec.pipeline.training.models import model_config

OPSET = 20  # 20: GELU is one Gelu node (ORT CPU and CUDA kernels), not five elementwise nodes
log = logging.getLogger(__name__)


def example_inputs(n_items: int, batch: int = 2, history_len: int = 7, n_candidates: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    history = torch.randint(1, n_items + 1, (batch, history_len), generator=generator)
    history[0, :2] = 0  # padding present in the trace
    candidates = torch.randint(1, n_items + 1, (batch, n_candidates), generator=generator)
    return history, candidates


def export_onnx(model: nn.Module, path: Path) -> Path:
    """Export ``model`` (eval mode, on CPU) to ``path`` following the bundle signature; checks the file."""
    model = model.to("cpu").eval()
    history, candidates = example_inputs(model_config(model).n_items)
    batch = torch.export.Dim("batch")
    shapes = {
        "history": {0: batch, 1: torch.export.Dim("history_len")},
        "candidates": {0: batch, 1: torch.export.Dim("n_candidates")},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        model,
        (history, candidates),
        dynamo=True,
        input_names=[ONNX_INPUT_HISTORY, ONNX_INPUT_CANDIDATES],
        output_names=[ONNX_OUTPUT_SCORES],
        dynamic_shapes=shapes,
        opset_version=OPSET,
        verbose=False,
    )
    assert program is not None  # the dynamo exporter always returns the program
    program.save(str(path))
    check_onnx(path)
    return path


def check_onnx(path: Path) -> None:
    """onnx.checker (full, with shape inference) plus the signature the serving tier relies on."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ArtifactIntegrityError(f"{path.name} fails onnx.checker: {exc}") from exc
    model = onnx.load(str(path), load_external_data=False)
    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name: o for o in model.graph.output}
    expected = {ONNX_INPUT_HISTORY: onnx.TensorProto.INT64, ONNX_INPUT_CANDIDATES: onnx.TensorProto.INT64}
    for name, dtype in expected.items():
        if name not in inputs or inputs[name].type.tensor_type.elem_type != dtype:
            raise ArtifactIntegrityError(f"{path.name}: input {name!r} must be int64")
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) != 2 or any(d.HasField("dim_value") for d in dims):
            raise ArtifactIntegrityError(f"{path.name}: input {name!r} must be rank 2 with dynamic dims")
    if ONNX_OUTPUT_SCORES not in outputs:
        raise ArtifactIntegrityError(f"{path.name}: output {ONNX_OUTPUT_SCORES!r} missing")


def optimise_offline(source: Path, target: Path) -> Path:
    """Write ORT's basic-level optimised graph (constant folding etc.) to ``target``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    check_onnx(target)
    return target


def session(path: Path, threads: int = 1, providers: list[str] | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def run_scores(sess: ort.InferenceSession, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    (scores,) = sess.run([ONNX_OUTPUT_SCORES], {ONNX_INPUT_HISTORY: history, ONNX_INPUT_CANDIDATES: candidates})
    return scores
