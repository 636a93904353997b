"""Gates -> model card -> registry. The last stages of a retrain run.

``apply_gates`` decides from the evaluation and export reports; ``publish`` registers the candidate
(always, so a rejected model keeps its evidence), rejects it when a gate failed, and otherwise says
what the release step should do: promote directly when there is no champion yet (a canary needs a
champion to compare with), hand over to the `release` DAG, or leave the candidate for the caller.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch

from freshrec.core.artifacts import (
    EvalReport,
    ExportReport,
    GateVerdict,
    ParityReport,
    RunLayout,
    ServedExportReport,
    read_artifact,
    write_artifact,
)
from freshrec.core.layout import Layout
from freshrec.core.registry.integrity import sha256_file
from freshrec.core.settings import Settings
from freshrec.pipeline.evaluation.gates import decide, served_gates, with_gates
from freshrec.pipeline.export.bundle import register, write_card
from freshrec.pipeline.export.onnx_export import OPSET
from freshrec.pipeline.export.retrieval import export_retrieval
from freshrec.pipeline.training import prepare as prep
from freshrec.pipeline.training.checkpoint import load_checkpoint
from freshrec.pipeline.training.histories import HISTORIES_FILE
from freshrec.pipeline.training.models import count_parameters, flops_per_request
from freshrec.pipeline.training.run import latest_event_day
from freshrec.pipeline.training.stages import read_training_summaries


def _reports(run_dir: Path) -> tuple[dict, dict]:
    paths = RunLayout(run_dir)
    export = read_artifact(paths.export_report, ExportReport).model_dump()
    export["parity"] = read_artifact(paths.parity, ParityReport).model_dump()
    return read_artifact(paths.evaluation, EvalReport).model_dump(), export


def apply_gates(settings: Settings, run_dir: Path) -> Path:
    evaluation, export = _reports(run_dir)
    champion = evaluation["models"].get("champion")
    verdict = decide(
        int8_ndcg=export["int8"]["ndcg@10"],
        fidelity=(export["int8"]["fidelity_ndcg@10"], export["student_fp32"]["fidelity_ndcg@10"]),
        int8_max_abs_diff=export["int8"]["max_abs_diff_vs_fp32"],
        champion_ndcg=champion["overall"]["ndcg@10"] if champion else None,
        parity={name: p["max_abs_diff"] for name, p in export["parity"].items()},
        floor=settings.gates.min_ndcg_at_10,
        max_regression=settings.gates.max_regression,
        int8_max_loss=settings.gates.int8_max_loss,
    )
    return write_artifact(RunLayout(run_dir).gates, GateVerdict.model_validate(verdict.to_dict()))


def apply_served_gates(settings: Settings, run_dir: Path) -> Path:
    """Add the checks of the graphs refitted on all interactions (paired int8 fidelity, parity) to gates.json."""
    paths = RunLayout(run_dir)
    served = read_artifact(paths.served_export, ServedExportReport).model_dump()
    verdict = with_gates(
        read_artifact(paths.gates, GateVerdict).model_dump(),
        served_gates(
            fidelity=(served["int8"]["fidelity_ndcg@10"], served["student_fp32"]["fidelity_ndcg@10"]),
            int8_max_abs_diff=served["int8"]["max_abs_diff_vs_fp32"],
            parity={name: p["max_abs_diff"] for name, p in served["parity"].items()},
            int8_max_loss=settings.gates.int8_max_loss,
        ),
    )
    return write_artifact(paths.gates, GateVerdict.model_validate(verdict.to_dict()))


def served_training(run_dir: Path) -> tuple[dict | None, dict | None]:
    """(refit_on_all.json, served_export.json) when the served models were refitted on all interactions."""
    paths = RunLayout(run_dir)
    served = paths.served_export
    if not paths.refit.is_file() or not served.is_file():
        return None, None
    return json.loads(paths.refit.read_text()), read_artifact(served, ServedExportReport).model_dump()


def model_facts(run_dir: Path, history_len: int) -> dict:
    paths = RunLayout(run_dir)
    data = prep.load(paths.training_set)
    categories = torch.from_numpy(data.categories)
    facts: dict[str, Any] = {}
    for name in ("teacher", "student"):
        model, _ = load_checkpoint(paths.served_checkpoint(name), categories)
        facts[name] = {
            "config": model.config.__dict__,
            "params": count_parameters(model),
            "flops_per_request": flops_per_request(model, history_len, data.vocab.n_items),
        }
    facts["teacher_over_student_flops"] = facts["teacher"]["flops_per_request"] / facts["student"]["flops_per_request"]
    return facts


def code_version() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def lineage(settings: Settings, run_dir: Path, dag_run_id: str | None, parent_version: int | None) -> dict:
    layout = Layout(settings.home)
    days = layout.feature_days()
    paths = RunLayout(run_dir)
    data = prep.load(paths.training_set)
    histories = paths.stage("prepare") / HISTORIES_FILE
    return {
        "feature_days": [d.isoformat() for d in days],
        "feature_manifests": [str(layout.manifest(d)) for d in days],
        # the histories every model of the run learnt from, as Spark built them from the clean events of those days
        "training_input": ({"file": str(histories.relative_to(run_dir)), "sha256": sha256_file(histories),
                            "built_by": "freshrec.spark.training_input (online_snapshot.touches, as the online snapshot)"}
                           if histories.is_file() else None),
        "code_version": code_version(),
        "dag_run_id": dag_run_id,
        "parent_version": parent_version,
        "run_id": run_dir.name,
        "events_through": latest_event_day(layout),
        "protocol": data.protocol,
        "holdout_cutoff": data.cutoff,
        "data_counts": data.counts,
        "training_data": prep.training_data_facts(data, served_on_all=served_training(run_dir)[0] is not None),
    }


def served_metrics(evaluation: dict, export: dict, refitted: bool = False) -> dict:
    """Registry metrics: the gated int8 graph's holdout metrics at the top, every model under `models`.

    Without a refit on all interactions that graph is the served one; with it, ``metrics_from`` says the
    figures belong to the holdout-trained graph (the served refit has seen the holdout)."""
    models = {name: m for name, m in evaluation["models"].items()}
    models["student_fp32_onnx"] = export["student_fp32"]["metrics"]
    models["student_int8_onnx"] = export["int8"]["metrics"]
    source = ("holdout-trained int8 student (student.eval.int8.onnx); the served graphs were refitted on all "
              "interactions after the gates passed" if refitted else "served int8 student (student.int8.onnx)")
    return {**export["int8"]["metrics"]["overall"], "protocol": evaluation["protocol"], "metrics_from": source,
            "models": models}


def publish(
    settings: Settings, registry, run_dir: Path, dag_run_id: str | None = None, parent_version: int | None = None
) -> dict:
    """Register the bundle; reject it when a gate failed. Returns {"version", "state", "action", "reasons"}."""
    evaluation, export = _reports(run_dir)
    verdict = read_artifact(RunLayout(run_dir).gates, GateVerdict).model_dump()
    facts = model_facts(run_dir, settings.data.online_history_length)
    refit, served = served_training(run_dir)
    card: dict[str, Any] = {
        "model_name": settings.model_name,
        "run_id": run_dir.name,
        "metrics": served_metrics(evaluation, export, refitted=refit is not None),
        "gates": verdict,
        "models": facts,
        "training": read_training_summaries(run_dir),
        "refit_on_all": None if refit is None else {
            name: {k: v for k, v in summary.items() if k != "curve"} for name, summary in refit["models"].items()
        },
        "export": {
            "exporter": "torch.onnx.export(dynamo=True)",
            "opset": OPSET,
            "ort_offline_optimisation": "basic",
            "int8_recipe": export["int8"]["recipe"],
            "int8_trials": [{k: t.get(k) for k in ("recipe", "ndcg@10", "max_abs_diff_vs_fp32", "latency", "size", "error")}
                            for t in export["int8_trials"]],
            "parity": export["parity"],
            "student_fp32": {k: export["student_fp32"][k] for k in ("latency", "size")},
            "pruning": export.get("pruning"),
            "served_refit": None if served is None else {
                k: served[k] for k in ("int8", "int8_recipes_tried", "student_fp32", "parity", "pruning", "eval_graph")
                if k in served
            },
        },
    }
    if verdict["passed"]:  # a rejected candidate is never served: no index for it
        card["export"]["retrieval"] = export_retrieval(run_dir, settings.serving.max_candidates,
                                                       settings.serving.retrieval_fetch)
    run_lineage = lineage(settings, run_dir, dag_run_id, parent_version)
    card["lineage"] = run_lineage
    card["training_data"] = run_lineage["training_data"]
    write_card(run_dir, card)
    view = register(registry, run_dir, card["metrics"], run_lineage, card)
    if not verdict["passed"]:
        registry.reject(view.version, verdict["reasons"], evidence={"gates": verdict}, actor="retrain")
        return {"version": str(view.version), "state": "rejected", "action": "rejected", "reasons": verdict["reasons"]}
    return {"version": str(view.version), "state": "candidate", "action": "pending", "reasons": []}


def release_action(registry, version: str, trigger_release: bool) -> str:
    """First model: promote directly. Otherwise hand over to the `release` DAG or leave it to the caller."""
    if registry.serving_state().champion is None:
        registry.promote(version, actor="retrain", reason="first model: no champion to run a canary against")
        return "promoted"
    return "release" if trigger_release else "left_as_candidate"

