"""Finish a bundle (model card, sha256 of every artifact) and record it in the registry.

A bundle is ``models/<run id>/``: student.fp32/int8/fp16.onnx, teacher.fp32.onnx, vocab.json,
model_card.json, the checkpoints (safetensors) the next run warm-starts from, and SHA256SUMS; above
serving.max_candidates items also the retrieval files (student.candidates.onnx, student.user.onnx, items.usearch). When the served
models were refitted on all interactions, the holdout-trained (gated) int8 student and checkpoints are
there too (student.eval.int8.onnx, teacher.eval.safetensors, student.eval.safetensors): checksummed, never served.
When export kept a pruned student, its weights (export's ``work/export/student.safetensors``, the torch twin of the
student graphs) are checksummed too; the root ``student.safetensors`` stays training's, the warm-start source.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from freshrec.core.artifacts import CHECKPOINT_SUFFIX, RunLayout
from freshrec.core.registry import sha256_file
from freshrec.core.registry.integrity import bundle_mismatches
from freshrec.core.schemas import (
    BUNDLE_CANDIDATE_GRAPH,
    BUNDLE_CARD,
    BUNDLE_ITEM_INDEX,
    BUNDLE_USER_TOWER,
    BUNDLE_VOCAB,
    SHA256SUMS,
)

# registry variant -> file in the bundle
VARIANT_FILES = {"fp32": "student.fp32.onnx", "int8": "student.int8.onnx", "fp16": "student.fp16.onnx", "teacher": "teacher.fp32.onnx"}
EVAL_FILES = ("student.eval.int8.onnx", f"student.eval{CHECKPOINT_SUFFIX}", f"teacher.eval{CHECKPOINT_SUFFIX}")
EXPORT_FILES = (RunLayout(Path()).export_checkpoint("student").as_posix(),)  # present only when a pruned student was kept
# present only for a catalogue above serving.max_candidates (freshrec.pipeline.export.retrieval)
RETRIEVAL_FILES = (BUNDLE_CANDIDATE_GRAPH, BUNDLE_USER_TOWER, BUNDLE_ITEM_INDEX)
BUNDLE_FILES = (*VARIANT_FILES.values(), BUNDLE_VOCAB, f"student{CHECKPOINT_SUFFIX}", f"teacher{CHECKPOINT_SUFFIX}", *EVAL_FILES,
                *EXPORT_FILES, *RETRIEVAL_FILES)


def bundle_artifacts(run_dir: Path) -> dict[str, Path]:
    """Registry artifacts (variant -> path) present in the bundle."""
    return {variant: run_dir / name for variant, name in VARIANT_FILES.items() if (run_dir / name).is_file()}


def file_facts(run_dir: Path) -> dict[str, dict]:
    return {
        name: {"sha256": sha256_file(run_dir / name), "size": (run_dir / name).stat().st_size}
        for name in BUNDLE_FILES
        if (run_dir / name).is_file()
    }


def write_card(run_dir: Path, card: dict) -> Path:
    """model_card.json (with the sha256 and size of every other file) and SHA256SUMS (card included)."""
    card = {**card, "files": file_facts(run_dir), "written_at": dt.datetime.now(dt.UTC).isoformat()}
    path = run_dir / BUNDLE_CARD
    path.write_text(json.dumps(card, indent=2, default=str))
    sums = {**{k: v["sha256"] for k, v in card["files"].items()}, BUNDLE_CARD: sha256_file(path)}
    (run_dir / SHA256SUMS).write_text("".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())))
    return path


def verify_bundle(run_dir: Path) -> list[str]:
    """Names whose sha256 no longer matches SHA256SUMS (empty when the bundle is intact)."""
    return bundle_mismatches(run_dir)


def register(registry, run_dir: Path, metrics: dict, lineage: dict, card: dict, actor: str = "retrain"):
    return registry.register_candidate(
        run_dir, {k: str(v) for k, v in bundle_artifacts(run_dir).items()}, metrics, lineage, card, actor=actor,
        reason=f"retrain run {RunLayout(run_dir).root.name}",
    )
