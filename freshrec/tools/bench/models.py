"""``freshrec bench models RATINGS``: every model of a retrain side by side on a ratings file, offline.

The protocol of the published table in ANCHORS.md by default (``msr``: MS Recommenders' stratified 75/25
split by item, seed 42, seen items removed, full ranking, top 10); ``temporal`` and the time-ordered
``sequential`` and ``prequential`` (freshrec.pipeline.training.protocols) on request. The retrain's own code trains:

- the gated models, all on the training part minus the early-stopping split: teacher (session-aware
  EASE wide layer + deep part), distilled student (teacher factorisation, then KD), control (same
  student, ground truth only, random start) and an ablation, the same student from a random start with
  the distillation loss only (what the KD loss alone is worth): the like-for-like comparison;
- the final models, refitted on the whole training part for the early-stopping epoch counts (what a
  pipeline serves): teacher and distilled student, exported to ONNX fp32 and every int8 recipe;
- baselines on the whole training part: popularity and plain EASE (lambda 400, the ANCHORS row), and two that
  tell order from no order (freshrec.pipeline.evaluation.baselines): item co-occurrence pooled over the whole
  history (order-blind) and Markov-1 (the most frequent successor of the user's last item; order only).

Per model: nDCG/recall/precision/MAP/HR@10 and coverage; paired bootstrap intervals for the differences
that the targets name; per-recipe int8 fidelity, score difference and CPU time per call. JSON + PNG
under reports/bench/. With ML-100K (the recbole wheel's ml-100k.inter) this reproduces the model-quality
figures of the closing notes in a few minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from rich.console import Console

from freshrec.core.accel import cpu_isa
from freshrec.core.artifacts import RunLayout
from freshrec.core.settings import Settings
from freshrec.pipeline.data.movielens import read_ratings
from freshrec.pipeline.data.movielens_meta import write_metadata
from freshrec.pipeline.evaluation import baselines
from freshrec.pipeline.export.latency import onnx_latency
from freshrec.pipeline.export.onnx_export import run_scores, session
from freshrec.pipeline.export.quantize import RECIPES, HistoryCalibration, quantise_int8
from freshrec.pipeline.export.stage import CALIBRATION_USERS, export_fp32
from freshrec.pipeline.offline.metrics import paired_bootstrap, per_user_metrics, ranking_metrics
from freshrec.pipeline.offline.ranking import Scorer, onnx_scorer, top_k, torch_scorer
from freshrec.pipeline.training import prepare as prep
from freshrec.pipeline.training import protocols
from freshrec.pipeline.training.checkpoint import load_checkpoint, load_model
from freshrec.pipeline.training.dataset import item_categories, normalise_interactions, pad_histories
from freshrec.pipeline.training.ease import ease_weights
from freshrec.pipeline.training.models import Student, StudentConfig, Teacher, multi_hot
from freshrec.pipeline.training.stages import (
    STUDENT,
    STUDENT_FIT,
    fit_config,
    read_training_summaries,
    refit,
    train_students,
    train_teacher,
)
from freshrec.pipeline.training.trainer import fit, resolve_device, seed_everything
from freshrec.tools.bench.reports import save, scratch

PUBLISHED_NDCG = {"BiVAE": 0.4751, "BPR (Cornac)": 0.4420, "LightGCN": 0.4198, "NCF": 0.3961, "SAR": 0.3825}
EASE_L2 = 400.0  # the plain EASE baseline of ANCHORS.md (lambda 300-500 on ML-100K)
BASELINES = ("popularity", "EASE (lambda 400)", "co-occurrence (order-blind)", "Markov-1 (last item)")
console = Console()
T = TypeVar("T")


def closed_form_scorer(weights: np.ndarray) -> Scorer:
    return lambda batch: multi_hot(torch.from_numpy(batch), weights.shape[0]).numpy() @ weights


def _popularity_scorer(histories: list[np.ndarray], n_rows: int) -> Scorer:
    counts = np.bincount(np.concatenate(histories), minlength=n_rows).astype(np.float32)
    return lambda batch: np.broadcast_to(counts, (len(batch), n_rows))


class Evaluation:
    """Ranks the test users once per model; keeps per-user nDCG for paired comparisons."""

    def __init__(self, test: prep.EvalSet, n_items: int) -> None:
        self.test, self.n_items = test, n_items
        self.metrics: dict[str, dict] = {}
        self.per_user: dict[str, np.ndarray] = {}

    def add(self, name: str, scorer: Scorer) -> dict:
        ranked = top_k(scorer, self.test.histories, self.test.seen, k=10)
        self.metrics[name] = ranking_metrics(ranked, self.test.relevant, k=10, n_items=self.n_items)
        self.per_user[name] = per_user_metrics(ranked, self.test.relevant, k=10)[0]["ndcg"]
        console.print(f"  {name:<28} nDCG@10 {self.metrics[name]['ndcg@10']:.4f}")
        return self.metrics[name]

    def compare(self, a: str, b: str) -> dict:
        return {"ratio": self.metrics[a]["ndcg@10"] / self.metrics[b]["ndcg@10"],
                **paired_bootstrap(self.per_user[a], self.per_user[b])}


def _timed(timings: dict[str, float], name: str, work: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = work()
    timings[name] = round(time.perf_counter() - started, 2)
    return result


def _int8_trials(run_dir: Path, data: prep.TrainingData, evaluation: Evaluation, fp32: Path) -> list[dict]:
    n_items = data.vocab.n_items
    calibration = HistoryCalibration(pad_histories(list(data.train.values())[:CALIBRATION_USERS], data.history_len), n_items)
    sample = evaluation.test.histories[:256]
    catalogue = np.broadcast_to(np.arange(1, n_items + 1, dtype=np.int64), (len(sample), n_items)).copy()
    reference = run_scores(session(fp32), sample, catalogue)
    fp32_cpu = onnx_latency(fp32, n_items, data.history_len, n_items)["cpu_p50_ms"]
    trials: list[dict[str, Any]] = []
    for recipe in RECIPES:
        graph = run_dir / f"student.int8.{recipe.name}.onnx"
        try:
            quantise_int8(fp32, graph, recipe, calibration)
        except Exception as exc:  # noqa: BLE001 - a recipe ORT cannot apply is reported, not fatal
            trials.append({"recipe": recipe.name, "error": str(exc)})
            continue
        name = f"student int8 ({recipe.name})"
        metrics = evaluation.add(name, onnx_scorer(graph, n_items))
        cpu = onnx_latency(graph, n_items, data.history_len, n_items)["cpu_p50_ms"]
        trials.append({
            "recipe": recipe.name,
            "ndcg@10": metrics["ndcg@10"],
            "vs_fp32": evaluation.compare(name, "student fp32 (final)"),
            "max_abs_diff_vs_fp32": float(np.abs(run_scores(session(graph), sample, catalogue) - reference).max()),
            "cpu_p50_ms": cpu,
            "speedup_vs_fp32_cpu": fp32_cpu / cpu,
            "size_bytes": graph.stat().st_size,
        })
    return trials


def _distil_from_scratch(settings: Settings, data: prep.TrainingData, paths: RunLayout, categories: torch.Tensor) -> Student:
    """The ablation: the student from a random start, same recipe as the distilled one, learning from the
    gated teacher's scores (and the ground truth) only."""
    teacher, _ = load_model(paths.checkpoint("teacher"), Teacher, categories)
    cfg = fit_config(settings, data, settings.training.student_epochs, STUDENT_FIT)
    seed_everything(cfg.seed)
    model = Student(StudentConfig(n_items=data.vocab.n_items, order_window=settings.training.order_window, **STUDENT))
    fit(model, data.fit, data.validation, cfg, resolve_device(settings.training.device), teacher, label="student, KD only")
    return model.cpu().eval()


def evaluate_models(settings: Settings, ratings: Path, protocol: str, work: Path) -> dict:
    kind, frame = read_ratings(ratings)
    interactions = normalise_interactions(frame.rename(columns={"timestamp": "ts"}))
    meta = work / "_meta"
    write_metadata(kind, meta)
    data = protocols.prepare(interactions, protocol, settings.training.holdout_days, settings.data.online_history_length,
                        settings.training.seed, lambda vocab: item_categories(meta / "items.parquet", vocab)[0])
    run_dir = work / "run"
    paths = RunLayout(run_dir)
    prep.save(data, paths.training_set)
    n_items = data.vocab.n_items
    timings: dict[str, float] = {}
    evaluation = Evaluation(data.test, n_items)
    console.print(f"[bold]models bench[/] {ratings.name}: {data.counts}")
    train_histories = [h for h in data.train.values() if len(h)]
    evaluation.add("popularity", _popularity_scorer(train_histories, n_items + 1))
    ease = _timed(timings, "ease_s", lambda: ease_weights(train_histories, n_items, EASE_L2))
    evaluation.add("EASE (lambda 400)", closed_form_scorer(ease))
    evaluation.add("co-occurrence (order-blind)", baselines.cooccurrence(train_histories, n_items))
    evaluation.add("Markov-1 (last item)", baselines.markov(train_histories, n_items))

    _timed(timings, "teacher_s", lambda: train_teacher(settings, run_dir, settings.training.teacher_epochs))
    _timed(timings, "students_s", lambda: train_students(settings, run_dir, settings.training.student_epochs))
    categories = torch.from_numpy(data.categories)
    for name in ("teacher", "student", "control"):
        evaluation.add(f"{name} (gated)", torch_scorer(load_checkpoint(paths.checkpoint(name), categories)[0]))
    kd_only = _timed(timings, "kd_only_s", lambda: _distil_from_scratch(settings, data, paths, categories))
    evaluation.add("student, KD only (gated)", torch_scorer(kd_only))

    summaries = read_training_summaries(run_dir)
    models, record = _timed(timings, "refit_s", lambda: refit(settings, data, data.train, data.train_times, summaries,
                                                              None, "refit on the training part", data.train_signals))
    evaluation.add("teacher (final)", torch_scorer(models["teacher"]))
    evaluation.add("student (final)", torch_scorer(models["student"]))
    fp32 = export_fp32(models["student"], run_dir / "student.fp32.onnx")
    evaluation.add("student fp32 (final)", onnx_scorer(fp32, n_items))
    trials = _timed(timings, "int8_s", lambda: _int8_trials(run_dir, data, evaluation, fp32))
    best = max((t for t in trials if "error" not in t), key=lambda t: t["ndcg@10"], default=None)
    return {
        "benchmark": "models",
        "ratings": str(ratings),
        "protocol": protocol,
        "protocol_definition": protocols.DEFINITIONS.get(protocol, ""),
        "counts": data.counts,
        "metrics": evaluation.metrics,
        "comparisons": {
            "teacher_vs_ease": evaluation.compare("teacher (final)", "EASE (lambda 400)"),
            "student_vs_teacher": evaluation.compare("student (final)", "teacher (final)"),
            "distilled_vs_control": evaluation.compare("student (gated)", "control (gated)"),
            "kd_only_vs_control": evaluation.compare("student, KD only (gated)", "control (gated)"),
            "best_int8_vs_fp32": evaluation.compare(f"student int8 ({best['recipe']})", "student fp32 (final)") if best else None,
        },
        "int8_recipes": trials,
        "training": {name: {k: v for k, v in s.items() if k != "curve"} for name, s in summaries.items()},
        "refit": {name: {k: v for k, v in r.items() if k != "curve"} for name, r in record.items()},
        "timings_s": timings,
        "cpu_isa": cpu_isa(),
        "published_ndcg@10": PUBLISHED_NDCG,
    }


def plot(report: dict, target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["metrics"])
    values = [report["metrics"][n]["ndcg@10"] for n in names]
    fig, ax = plt.subplots(figsize=(12, 5.5))
    bars = ax.barh(names, values, color=["#999" if n in BASELINES else "#3b75af" for n in names])
    ax.bar_label(bars, fmt="%.4f", fontsize=8)
    for label, value in report["published_ndcg@10"].items() if report["protocol"] == "msr" else ():
        ax.axvline(value, ls=":", lw=0.8, color="r")
        ax.text(value, -0.9, label, rotation=90, fontsize=7, color="r", va="top")
    ax.invert_yaxis()
    ax.set_xlabel("nDCG@10")
    note = " (dotted: published rows, ANCHORS.md)" if report["protocol"] == "msr" else ""
    ax.set_title(f"{Path(report['ratings']).name}, protocol {report['protocol']}{note}")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def run(settings: Settings, ratings: Path, protocol: str = "msr") -> Path:
    with scratch(settings, "models-") as work:
        report = evaluate_models(settings, Path(ratings), protocol, work)
    # One report per protocol: the msr one keeps its name (what the README and older reports point at).
    return save(settings, "models" if protocol == "msr" else f"models-{protocol}", report, plot)
