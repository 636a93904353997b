"""Real artifacts for serving tests: a small ONNX scoring model built with onnx.helper, bundles, snapshots.

The model follows the bundle signature (freshrec/schemas.py): Gather item embeddings of the history and
the candidates, masked mean of the history, batched MatMul -> scores.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper


def scoring_model(n_items: int, dim: int = 16, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    table = rng.normal(0, 0.5, size=(n_items + 1, dim)).astype(np.float32)
    table[0] = 0.0  # padding row
    nodes = [
        helper.make_node("Gather", ["item_emb", "history"], ["hist_emb"], axis=0),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, dtype=np.int64))),
        helper.make_node("Greater", ["history", "zero"], ["mask_bool"]),
        helper.make_node("Cast", ["mask_bool"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["axis1"], value=numpy_helper.from_array(np.array([1], dtype=np.int64))),
        helper.make_node("Constant", [], ["axis_last"], value=numpy_helper.from_array(np.array([-1], dtype=np.int64))),
        helper.make_node("Unsqueeze", ["mask", "axis_last"], ["mask3"]),
        helper.make_node("Mul", ["hist_emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1.0, dtype=np.float32))),
        helper.make_node("Max", ["count", "one"], ["count_safe"]),
        helper.make_node("Div", ["summed", "count_safe"], ["user"]),
        helper.make_node("Unsqueeze", ["user", "axis_last"], ["user3"]),
        helper.make_node("Gather", ["item_emb", "candidates"], ["cand_emb"], axis=0),
        helper.make_node("MatMul", ["cand_emb", "user3"], ["scores3"]),
        helper.make_node("Squeeze", ["scores3", "axis_last"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "freshrec_test_scorer",
        [
            helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", "history_len"]),
            helper.make_tensor_value_info("candidates", TensorProto.INT64, ["batch", "n_candidates"]),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "n_candidates"])],
        [numpy_helper.from_array(table, "item_emb")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def write_bundle(bundle_dir: Path, item_ids: list[str], seed: int) -> dict[str, Path]:
    """models/<run>/ with student.fp32.onnx, student.int8.onnx (ORT dynamic quantisation) and vocab.json."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle_dir.mkdir(parents=True, exist_ok=True)
    fp32 = bundle_dir / "student.fp32.onnx"
    int8 = bundle_dir / "student.int8.onnx"
    onnx.save(scoring_model(len(item_ids), seed=seed), fp32)
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"])
    (bundle_dir / "vocab.json").write_text(json.dumps({"items": item_ids, "users": []}))
    return {"fp32": fp32, "int8": int8}


def write_snapshot(online_dir: Path, name: str, users: dict[str, list[str]], popularity: dict[str, float]) -> None:
    """lake/online/<name>/ users.parquet + items.parquet, then CURRENT replaced atomically."""
    folder = online_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({
            "user_id": list(users),
            "history": [h for h in users.values()],
            "seen": [h for h in users.values()],
        }),
        folder / "users.parquet",
    )
    pq.write_table(
        pa.table({"item_id": list(popularity), "popularity": [float(v) for v in popularity.values()]}),
        folder / "items.parquet",
    )
    tmp = online_dir / "CURRENT.tmp"
    tmp.write_text(name)
    os.replace(tmp, online_dir / "CURRENT")


def served_variant() -> tuple[str, str]:
    """(artifact, provider) the server picks for a bundle of :func:`write_bundle` on this machine:
    int8 on the CPU EP; on a GPU machine fp32 on CUDA (these bundles have no fp16 graph)."""
    from freshrec.serving.execution import CPU, choose_providers

    providers = choose_providers(None)
    return ("int8", CPU) if providers[0] == CPU else ("fp32", providers[0])


def ann_student(n_items: int, seed: int):
    """A small order-aware torch Student with random weights and a successor table (sparse terms to retrieve)."""
    import torch

    from freshrec.pipeline.training.models import Student, StudentConfig

    torch.manual_seed(seed)
    student = Student(StudentConfig(n_items=n_items, dim=8, hidden=16, order_window=4, successors=4)).eval()
    with torch.no_grad():
        for param in student.parameters():
            if param.dtype.is_floating_point:
                param.normal_(0, 0.5)
        student.init_successors(torch.randn(n_items + 1, n_items + 1))
        student.item_in.weight[0].zero_()
    return student


def write_retrieval_bundle(bundle_dir: Path, item_ids: list[str], student) -> dict[str, Path]:
    """models/<run>/ served through ANN retrieval: the student's graphs, its user tower and item index, vocab.json
    and SHA256SUMS (what export writes above serving.max_candidates)."""
    import hashlib

    from freshrec.core.schemas import BUNDLE_CANDIDATE_GRAPH, BUNDLE_ITEM_INDEX, BUNDLE_USER_TOWER, SHA256SUMS
    from freshrec.pipeline.export.retrieval import IndexParams, build_index, candidate_student, export_user_tower, keys_of
    from freshrec.pipeline.export.stage import export_fp32

    bundle_dir.mkdir(parents=True, exist_ok=True)
    fp32 = export_fp32(student, bundle_dir / "student.fp32.onnx")
    export_fp32(candidate_student(student), bundle_dir / BUNDLE_CANDIDATE_GRAPH)
    export_user_tower(student, bundle_dir / BUNDLE_USER_TOWER)
    # one thread: a deterministic graph (a parallel build of a tiny index may leave a node unreachable)
    build_index(keys_of(student), bundle_dir / BUNDLE_ITEM_INDEX, IndexParams(connectivity=16, expansion_add=64), threads=1)
    (bundle_dir / "vocab.json").write_text(json.dumps({"items": item_ids, "users": []}))
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle_dir.iterdir() if p.is_file()}
    (bundle_dir / SHA256SUMS).write_text("".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())))
    return {"fp32": fp32}
