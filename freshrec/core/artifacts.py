"""The run folder's layout and the typed artifacts the retrain stages exchange.

A run folder ``models/<run id>/`` is the bundle the registry points at: the served graphs, the checkpoints
(safetensors: tensors plus a JSON header, nothing executable), ``vocab.json``, the model card and
``SHA256SUMS``. Each stage keeps its own evidence under ``work/<stage>/``:

    work/prepare/training_set.npz      the training set (arrays only, no pickle)
    work/prepare/histories.parquet     every part's histories as Spark built them (freshrec.spark.training_input)
    work/train/<model>_training.json   early-stopping summaries; refit_on_all.json after the refit
    work/evaluate/evaluation.json      EvalReport: holdout metrics of the torch models and the champion
    work/export/export.json            ExportReport: graphs, quantisation, latency (+ parity.json: ParityReport,
                                       served_export.json: ServedExportReport after the refit)
    work/export/student.safetensors    the pruned student when export kept a pruned variant (the weights of the
                                       student graphs); absent: the graphs are training's ``student.safetensors``
    work/gates/gates.json              GateVerdict: passed or not, and why

A stage reads the artifacts it declares and writes its own folder; the JSON ones are pydantic models, so a
missing key or a wrong type is a clear ``ArtifactIntegrityError`` where it is read, not a KeyError later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from freshrec.core.errors import ArtifactIntegrityError

CHECKPOINT_SUFFIX: Final = ".safetensors"
SERVED_MODELS: Final = ("teacher", "student")
STAGES: Final = ("prepare", "train", "evaluate", "export", "gates")


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    def stage(self, name: str) -> Path:
        """A stage's own folder (created on first use)."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages: {STAGES}")
        folder = self.work / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def training_set(self) -> Path:
        return self.work / "prepare" / "training_set.npz"

    def checkpoint(self, name: str) -> Path:
        # teacher and student stay in the bundle (the next run warm-starts from them); others are scratch
        return self.root / f"{name}{CHECKPOINT_SUFFIX}" if name in SERVED_MODELS else self.work / "train" / f"{name}{CHECKPOINT_SUFFIX}"

    def export_checkpoint(self, name: str) -> Path:
        """The export stage's own checkpoint of a model it changed (a pruned student); training's stays as trained."""
        return self.work / "export" / f"{name}{CHECKPOINT_SUFFIX}"

    def served_checkpoint(self, name: str) -> Path:
        """The weights of ``name``'s exported graphs: export's checkpoint when it changed the model, else training's."""
        exported = self.export_checkpoint(name)
        return exported if exported.is_file() else self.checkpoint(name)

    def eval_checkpoint(self, name: str) -> Path:
        """The holdout-trained (gated) checkpoint once the served one was refitted on all interactions."""
        return self.root / f"{name}.eval{CHECKPOINT_SUFFIX}"

    def onnx(self, name: str, variant: str) -> Path:
        return self.root / f"{name}.{variant}.onnx"

    def eval_onnx(self, name: str, variant: str) -> Path:
        """The holdout-trained graph kept next to the served one (the next run's champion comparison)."""
        return self.root / f"{name}.eval.{variant}.onnx"

    def training_summary(self, name: str) -> Path:
        return self.work / "train" / f"{name}_training.json"

    @property
    def refit(self) -> Path:
        """Summary of the refit on all interactions (absent: the served models are the gated ones)."""
        return self.work / "train" / "refit_on_all.json"

    @property
    def evaluation(self) -> Path:
        return self.work / "evaluate" / "evaluation.json"

    @property
    def export_report(self) -> Path:
        return self.work / "export" / "export.json"

    @property
    def parity(self) -> Path:
        return self.work / "export" / "parity.json"

    @property
    def served_export(self) -> Path:
        return self.work / "export" / "served_export.json"

    @property
    def gates(self) -> Path:
        return self.work / "gates" / "gates.json"

    def report(self, name: str) -> Path:
        return self.root / name


class Artifact(BaseModel):
    """A JSON artifact: the declared fields are required and typed; the rest (per-model detail) is kept."""

    model_config = ConfigDict(extra="allow")


class EvalReport(Artifact):
    """Holdout metrics of the torch models and the champion (``evaluate`` stage)."""

    protocol: str
    cutoff: str | None
    counts: dict[str, int]
    models: dict[str, dict[str, Any]]
    comparisons: dict[str, dict[str, Any]] = {}
    champion_graph: str | None = None
    champion_error: str | None = None


class ExportReport(Artifact):
    """The gated graphs: fp32 per model, the int8 recipes tried and the one kept, fp16, pruning (``export``)."""

    models: dict[str, dict[str, str]]
    student_fp32: dict[str, Any]
    int8: dict[str, Any]
    int8_trials: list[dict[str, Any]]
    fp16: dict[str, Any] | None = None
    pruning: dict[str, Any] | None = None


class ParityReport(Artifact):
    """torch vs ONNX Runtime fp32 per model on real histories (``export``)."""

    teacher: dict[str, Any]
    student: dict[str, Any]


class ServedExportReport(Artifact):
    """The served graphs refitted on all interactions and their checks (``export``, after the refit)."""

    trained_on: dict[str, Any]
    pruning: str | None
    parity: dict[str, dict[str, Any]]
    student_fp32: dict[str, Any]
    int8: dict[str, Any]
    teacher_fp32: dict[str, Any]
    eval_graph: str
    fp16: dict[str, Any] | None = None
    # Each int8 recipe tried on the refit, in order, with its fidelity nDCG@10 and the gate's floor.
    int8_recipes_tried: list[dict[str, Any]] = []


class GateVerdict(Artifact):
    """Whether the candidate may be released, each gate with its evidence, and the failing ones' reasons."""

    passed: bool
    gates: list[dict[str, Any]]
    reasons: list[str]


A = TypeVar("A", bound=Artifact)


def write_artifact(path: Path, artifact: Artifact) -> Path:
    """Write atomically (temp file, then rename): a reader never sees half an artifact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(artifact.model_dump(mode="json"), indent=2, default=str))
    partial.replace(path)
    return path


def read_artifact(path: Path, kind: type[A]) -> A:
    try:
        return kind.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ArtifactIntegrityError(f"{path}: missing; the stage that writes the {kind.__name__} has not run") from None
    except ValidationError as exc:
        raise ArtifactIntegrityError(f"{path}: not a valid {kind.__name__}: {exc}") from None
