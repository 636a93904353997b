"""int8 and fp16 variants of an exported fp32 graph (onnxruntime.quantization, onnxconverter-common).

Recipes differ in format (dynamic vs static QDQ with calibration), per-channel weights, 7-bit weights
(``reduce_range``) and whether the embedding tables (Gather) are quantised: by ORT with one scale per table
(``embeddings``) or by ``row_tables`` with one scale per row (``row_tables``);
``freshrec.pipeline.export.stage`` measures them and keeps the best one (the smallest of equal quality).

``reduce_range``: 7-bit weights. ORT documents that on x86 CPUs without VNNI its u8 x s8 kernels add
pairs of products in int16 (VPMADDUBSW), which saturates with full-range 8-bit weights; 7-bit weights
cannot saturate there. Measured on the 300-user e2e slice (an AVX-512 VNNI box, so not saturation
alone): 8-bit weights lost 0.96% nDCG@10 against fp32, 7-bit 0.14%; on ML-100K all dynamic recipes are
within 0.2%. Which recipe wins is measured per run, not assumed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from freshrec.core.schemas import ONNX_INPUT_CANDIDATES, ONNX_INPUT_HISTORY
from freshrec.pipeline.export.onnx_export import check_onnx
from freshrec.pipeline.export.row_activations import per_row_activations
from freshrec.pipeline.export.row_tables import quantise_row_tables


@dataclass(frozen=True)
class Int8Recipe:
    name: str
    static: bool = False
    per_channel: bool = False
    embeddings: bool = False
    reduce_range: bool = False
    row_tables: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES = (
    Int8Recipe("dynamic"),
    Int8Recipe("dynamic_reduce_range", reduce_range=True),
    Int8Recipe("dynamic_per_channel", per_channel=True),
    Int8Recipe("dynamic_embeddings", embeddings=True),
    Int8Recipe("dynamic_row_tables", row_tables=True),
    Int8Recipe("dynamic_reduce_range_row_tables", reduce_range=True, row_tables=True),
    Int8Recipe("static_qdq", static=True),
    Int8Recipe("static_qdq_per_channel", static=True, per_channel=True),
)


class HistoryCalibration(CalibrationDataReader):
    """Feeds real training histories (and catalogue candidates) to the static calibrator."""

    def __init__(self, histories: np.ndarray, n_items: int, batch_size: int = 32) -> None:
        self._batches = [histories[i : i + batch_size] for i in range(0, len(histories), batch_size)]
        self._n_items = n_items
        self._iter: Iterator[np.ndarray] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        if batch is None:
            return None
        candidates = np.broadcast_to(np.arange(1, self._n_items + 1, dtype=np.int64), (len(batch), self._n_items))
        return {ONNX_INPUT_HISTORY: batch, ONNX_INPUT_CANDIDATES: np.ascontiguousarray(candidates)}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def quantise_int8(
    fp32: Path, target: Path, recipe: Int8Recipe, calibration: HistoryCalibration | None = None
) -> Path:
    """Quantise ``fp32`` into ``target`` following ``recipe``; static recipes need calibration data."""
    prepared = target.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False)
    ops = ["MatMul", "Gemm"] + (["Gather"] if recipe.embeddings else [])
    try:
        if recipe.static:
            if calibration is None:
                raise ValueError(f"recipe {recipe.name} needs calibration data")
            calibration.rewind()
            quantize_static(
                str(prepared), str(target), calibration, quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=recipe.per_channel,
                reduce_range=recipe.reduce_range, op_types_to_quantize=ops, extra_options={"ActivationSymmetric": True},
            )
        else:
            quantize_dynamic(
                str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=recipe.per_channel,
                reduce_range=recipe.reduce_range, op_types_to_quantize=ops,
            )
    finally:
        prepared.unlink(missing_ok=True)
    model = onnx.load(str(target))
    # Dynamic recipes: one activation scale per row, so a user's scores do not depend on their batch mates.
    changed = per_row_activations(model) > 0
    changed = bool(recipe.row_tables and quantise_row_tables(model)) or changed
    if changed:
        onnx.save(model, str(target))
    check_onnx(target)
    return target


def convert_fp16(fp32: Path, target: Path) -> Path:
    """fp16 weights and compute for GPU; the int64 inputs and the float32 output stay as they are.

    Cast stays in fp32 (the converter would not retarget its ``to`` attribute, leaving the graph
    inconsistent); the converter wraps it in casts instead. The scatter-adds (the student's successor and
    neighbour tables) add in fp32 between casts (``_scatter_in_fp32``): ORT's CPU provider has no fp16
    scatter-add, and blocking the op in the converter makes it loop without end.
    """
    from onnxconverter_common import float16

    blocked = [*float16.DEFAULT_OP_BLOCK_LIST, "Cast"]
    model = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True, op_block_list=blocked)
    _scatter_in_fp32(model)
    onnx.save(model, str(target))
    check_onnx(target)
    return target


def _scatter_in_fp32(model: onnx.ModelProto) -> None:
    """Every ScatterElements of an fp16 graph: its data and updates cast to fp32, its result cast back to fp16."""
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != "ScatterElements":
            nodes.append(node)
            continue
        data, indices, updates = node.input
        result = node.output[0]
        tag = node.name or result
        nodes += [onnx.helper.make_node("Cast", [data], [f"{tag}/data_fp32"], name=f"{tag}/cast_data", to=onnx.TensorProto.FLOAT),
                  onnx.helper.make_node("Cast", [updates], [f"{tag}/updates_fp32"], name=f"{tag}/cast_updates",
                                        to=onnx.TensorProto.FLOAT)]
        node.input[0], node.input[2], node.output[0] = f"{tag}/data_fp32", f"{tag}/updates_fp32", f"{tag}/fp32"
        nodes += [node, onnx.helper.make_node("Cast", [f"{tag}/fp32"], [result], name=f"{tag}/cast_back",
                                              to=onnx.TensorProto.FLOAT16)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
