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

Order-blind against order-aware: the configured models (``training.order_window``) and the other variant
(order-blind when the settings turn order on, else ``ORDER_WINDOW`` newest items) are both trained, gated,
refitted and quantised with the same int8 recipe; the ``order`` section reports both side by side with
FLOPs and single-thread latency per request (batch 1 and batch ``max_batch``: the serving budget).

Per model: nDCG/recall/precision/MAP/HR@10 and coverage; paired bootstrap intervals for the differences
that the targets name; per-recipe int8 fidelity, score difference and CPU time per call. JSON + PNG
under reports/bench/. The source is a ratings file (MovieLens formats) or an events root as written by
``freshrec data synth`` or the raw lake (``ds=`` folders of parquet, csv or jsonl; ``_meta/items.parquet``
gives categories). ``--protocol all`` runs every protocol into one report (``models-all``). With ML-100K
(the recbole wheel's ml-100k.inter) this reproduces the model-quality figures of the closing notes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import torch
from rich.console import Console

from freshrec.core.accel import cpu_isa
from freshrec.core.artifacts import RunLayout
from freshrec.core.errors import InvalidInput
from freshrec.core.settings import Settings
from freshrec.pipeline.data.movielens import read_ratings
from freshrec.pipeline.data.movielens_meta import write_metadata
from freshrec.pipeline.evaluation import baselines
from freshrec.pipeline.export.latency import interleaved_onnx_latency, onnx_latency, request_inputs, time_calls, torch_latency
from freshrec.pipeline.export.onnx_export import run_scores, session
from freshrec.pipeline.export.quantize import RECIPES, HistoryCalibration, Int8Recipe, quantise_int8
from freshrec.pipeline.export.stage import CALIBRATION_USERS, export_fp32
from freshrec.pipeline.offline.metrics import paired_bootstrap, per_user_metrics, ranking_metrics
from freshrec.pipeline.offline.ranking import Scorer, onnx_scorer, top_k, torch_scorer
from freshrec.pipeline.training import prepare as prep
from freshrec.pipeline.training import protocols
from freshrec.pipeline.training.checkpoint import load_checkpoint, load_model
from freshrec.pipeline.training.dataset import item_categories, normalise_interactions, pad_histories
from freshrec.pipeline.training.ease import ease_weights
from freshrec.pipeline.training.models import Student, StudentConfig, Teacher, flops_per_request, multi_hot
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
ORDER_WINDOW = 8  # the order-aware variant's window when the settings leave order off
BASE_STUDENT_INT8 = "student before order and neighbours, int8 (cost only)"
BASE_STUDENT = {"dim": 128, "hidden": 256}  # the served student's shape before order, neighbours and width 256
EVENT_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}
console = Console()
T = TypeVar("T")


def read_source(source: Path, work: Path) -> tuple[pd.DataFrame, Path]:
    """(interactions, metadata folder) of a ratings file or an events root (see the module docstring)."""
    if source.is_file():
        kind, frame = read_ratings(source)
        write_metadata(kind, work / "_meta")
        return normalise_interactions(frame.rename(columns={"timestamp": "ts"})), work / "_meta"
    if not source.is_dir():
        raise InvalidInput(f"{source} is neither a ratings file nor an events folder")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix in EVENT_SUFFIXES
                   and not any(part.startswith(("_", ".")) for part in p.relative_to(source).parts))
    formats = {EVENT_SUFFIXES[p.suffix] for p in files}
    if len(formats) != 1:
        raise InvalidInput(f"{source}: expected event files of one format (parquet, csv or jsonl), found "
                           f"{sorted(formats) or 'none'}")
    table = ds.dataset([str(p) for p in files], format=formats.pop()).to_table()
    missing = {"user_id", "item_id", "ts"} - set(table.column_names)
    if missing:
        raise InvalidInput(f"{source}: events lack the columns {sorted(missing)}")
    keep = [c for c in ("user_id", "item_id", "ts", "event_type", "value") if c in table.column_names]
    return normalise_interactions(table.select(keep).to_pandas()), source / "_meta"


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
    calibration = _calibration(data)
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


def _distil_from_scratch(settings: Settings, data: prep.TrainingData, paths: RunLayout, categories: torch.Tensor,
                         window: int) -> Student:
    """The ablation: the student from a random start, same recipe and order window as the distilled one, learning
    from the gated teacher's scores (and the ground truth) only."""
    teacher, _ = load_model(paths.checkpoint("teacher"), Teacher, categories)
    cfg = fit_config(settings, data, settings.training.student_epochs, STUDENT_FIT, window)
    seed_everything(cfg.seed)
    model = Student(StudentConfig(n_items=data.vocab.n_items, order_window=window,
                                  neighbours=settings.training.student_neighbours, **STUDENT))
    fit(model, data.fit, data.validation, cfg, resolve_device(settings.training.device), teacher, label="student, KD only")
    return model.cpu().eval()


def _with_window(settings: Settings, window: int) -> Settings:
    return settings.model_copy(update={"training": settings.training.model_copy(update={"order_window": window})})


def _train_variant(settings: Settings, data: prep.TrainingData, run_dir: Path, label: str, evaluation: Evaluation,
                   recipe: Int8Recipe) -> dict:
    """The other order variant, as the retrain builds it: gated teacher and distilled student (no control),
    refitted on the training part, exported to fp32 and to int8 with ``recipe``."""
    paths = RunLayout(run_dir)
    prep.save(data, paths.training_set)
    categories = torch.from_numpy(data.categories)
    train_teacher(settings, run_dir, settings.training.teacher_epochs)
    train_students(settings, run_dir, settings.training.student_epochs, control=False)
    for name in ("teacher", "student"):
        evaluation.add(f"{name}, {label} (gated)", torch_scorer(load_checkpoint(paths.checkpoint(name), categories)[0]))
    models, _ = refit(settings, data, data.train, data.train_times, read_training_summaries(run_dir), None,
                      f"{label}, refit on the training part", data.train_signals)
    rows = {"teacher": f"teacher, {label} (final)", "student": f"student, {label} (final)",
            "int8": f"student, {label} int8 ({recipe.name})"}
    evaluation.add(rows["teacher"], torch_scorer(models["teacher"]))
    evaluation.add(rows["student"], torch_scorer(models["student"]))
    fp32 = export_fp32(models["student"], run_dir / "student.fp32.onnx")
    int8 = quantise_int8(fp32, run_dir / "student.int8.onnx", recipe, _calibration(data))
    evaluation.add(rows["int8"], onnx_scorer(int8, data.vocab.n_items))
    return {"rows": rows, "models": models, "fp32": fp32, "int8": int8}


def _calibration(data: prep.TrainingData) -> HistoryCalibration:
    return HistoryCalibration(pad_histories(list(data.train.values())[:CALIBRATION_USERS], data.history_len),
                              data.vocab.n_items)


def _base_student_int8(data: prep.TrainingData, work: Path, recipe: Int8Recipe) -> Path:
    """The order-blind 128-wide student without a neighbour table (the architecture served before all three), untrained:
    a cost reference only (its weights do not change what a request costs)."""
    model = Student(StudentConfig(n_items=data.vocab.n_items, **BASE_STUDENT)).eval()
    fp32 = export_fp32(model, work / "base-student.fp32.onnx")
    return quantise_int8(fp32, work / "base-student.int8.onnx", recipe, _calibration(data))


def _request_cost(settings: Settings, data: prep.TrainingData, variants: dict[str, dict], ease: np.ndarray,
                  work: Path, recipe: Int8Recipe) -> dict:
    """FLOPs and single-thread latency of one request scoring the whole catalogue with a full history, per
    model: the students' fp32 and int8 graphs in ORT (alternating rounds, batch 1 and batch ``max_batch``),
    the teachers and EASE in torch / numpy."""
    n_items, history_len, batch = data.vocab.n_items, data.history_len, settings.serving.max_batch
    graphs = [(f"{v['rows']['student']} fp32", v["fp32"]) for v in variants.values()]
    graphs += [(v["rows"]["int8"], v["int8"]) for v in variants.values()]
    graphs.append((BASE_STUDENT_INT8, _base_student_int8(data, work, recipe)))
    paths = [g for _, g in graphs]
    single = interleaved_onnx_latency(paths, n_items, history_len, n_items)
    batched = interleaved_onnx_latency(paths, n_items, history_len, n_items, batch=batch)
    cost: dict[str, dict] = {}
    models = {name: next(v["models"]["student"] for v in variants.values()
                         if name.startswith(v["rows"]["student"]) or name == v["rows"]["int8"]) for name, _ in graphs[:-1]}
    models[BASE_STUDENT_INT8] = Student(StudentConfig(n_items=n_items, **BASE_STUDENT))
    for (name, _), one, many in zip(graphs, single, batched, strict=True):
        cost[name] = {"mflop_per_request": flops_per_request(models[name], history_len, n_items) / 1e6,
                      "cpu_p50_ms": one["cpu_p50_ms"], "p50_ms": one["p50_ms"],
                      f"batch{batch}_cpu_p50_ms": many["cpu_p50_ms"],
                      "requests_per_cpu_s": 1000.0 * batch / many["cpu_p50_ms"]}
    for variant in variants.values():
        teacher = variant["models"]["teacher"]
        timing = torch_latency(teacher, n_items, history_len, n_items)
        cost[variant["rows"]["teacher"]] = {"mflop_per_request": flops_per_request(teacher, history_len, n_items) / 1e6,
                                            "cpu_p50_ms": timing["cpu_p50_ms"], "p50_ms": timing["p50_ms"], "engine": "torch"}
    history, _ = request_inputs(n_items, history_len, n_items)
    scorer = closed_form_scorer(ease)
    timing = time_calls(lambda: scorer(history))
    cost["EASE (lambda 400)"] = {"mflop_per_request": 2 * history_len * n_items / 1e6, "cpu_p50_ms": timing["cpu_p50_ms"],
                                 "p50_ms": timing["p50_ms"], "engine": "numpy (history rows of the item matrix)"}
    return cost


def _order_section(settings: Settings, data: prep.TrainingData, work: Path, evaluation: Evaluation, primary: dict,
                   recipe: Int8Recipe, ease: np.ndarray) -> dict:
    """Order-blind against order-aware, the configured variant beside the other one (see the module docstring)."""
    window = settings.training.order_window
    label, other_label = ("order-aware", "order-blind") if window else ("order-blind", "order-aware")
    other_window = 0 if window else ORDER_WINDOW
    variants = {label: primary}
    variants[other_label] = _train_variant(_with_window(settings, other_window), data, work / f"run-{other_label}",
                                           other_label, evaluation, recipe)
    aware, blind = variants["order-aware"]["rows"], variants["order-blind"]["rows"]
    cost = _request_cost(settings, data, variants, ease, work, recipe)
    aware_int8, blind_int8, base_int8 = cost[aware["int8"]], cost[blind["int8"]], cost[BASE_STUDENT_INT8]
    metrics = evaluation.metrics
    return {
        "windows": {"order-blind": 0, "order-aware": window or ORDER_WINDOW},
        # the students' own: an order-aware run keeps its students order-blind where the teacher's validation chose
        # no transition term or the order-blind student ranked the validation split better
        # (freshrec.pipeline.training.stages.student_windows)
        "student_windows": {name: v["models"]["student"].config.order_window for name, v in variants.items()},
        "configured": label,
        "int8_recipe": recipe.name,
        "rows": {name: v["rows"] for name, v in variants.items()},
        "comparisons": {
            "aware_int8_vs_blind_int8": evaluation.compare(aware["int8"], blind["int8"]),
            "aware_int8_vs_ease": evaluation.compare(aware["int8"], "EASE (lambda 400)"),
            "aware_student_vs_aware_teacher": evaluation.compare(aware["student"], aware["teacher"]),
            "blind_student_vs_blind_teacher": evaluation.compare(blind["student"], blind["teacher"]),
        },
        "hr@10_ratio_aware_int8_vs_blind_int8": metrics[aware["int8"]]["hr@10"] / max(metrics[blind["int8"]]["hr@10"], 1e-12),
        "cost_per_request": cost,
        "serving_budget": {
            "aware_mflop_per_request": aware_int8["mflop_per_request"],
            "teacher_over_student_flops": cost[aware["teacher"]]["mflop_per_request"] / aware_int8["mflop_per_request"],
            "int8_cpu_p50_added_ms": aware_int8["cpu_p50_ms"] - blind_int8["cpu_p50_ms"],
            "int8_batch_throughput_ratio": aware_int8["requests_per_cpu_s"] / blind_int8["requests_per_cpu_s"],
            "int8_cpu_p50_added_vs_base_ms": aware_int8["cpu_p50_ms"] - base_int8["cpu_p50_ms"],
            "int8_batch_throughput_ratio_vs_base": aware_int8["requests_per_cpu_s"] / base_int8["requests_per_cpu_s"],
        },
    }


def evaluate_models(settings: Settings, source: Path, protocol: str, work: Path) -> dict:
    interactions, meta = read_source(source, work)
    data = protocols.prepare(interactions, protocol, settings.training.holdout_days, settings.data.online_history_length,
                        settings.training.seed, lambda vocab: item_categories(meta / "items.parquet", vocab)[0])
    run_dir = work / "run"
    paths = RunLayout(run_dir)
    prep.save(data, paths.training_set)
    n_items = data.vocab.n_items
    timings: dict[str, float] = {}
    evaluation = Evaluation(data.test, n_items)
    console.print(f"[bold]models bench[/] {source.name}, protocol {protocol}: {data.counts}")
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
    summaries = read_training_summaries(run_dir)
    window = int(summaries["student"]["order_window"])
    kd_only = _timed(timings, "kd_only_s", lambda: _distil_from_scratch(settings, data, paths, categories, window))
    evaluation.add("student, KD only (gated)", torch_scorer(kd_only))

    models, record = _timed(timings, "refit_s", lambda: refit(settings, data, data.train, data.train_times, summaries,
                                                              None, "refit on the training part", data.train_signals))
    evaluation.add("teacher (final)", torch_scorer(models["teacher"]))
    evaluation.add("student (final)", torch_scorer(models["student"]))
    fp32 = export_fp32(models["student"], run_dir / "student.fp32.onnx")
    evaluation.add("student fp32 (final)", onnx_scorer(fp32, n_items))
    trials = _timed(timings, "int8_s", lambda: _int8_trials(run_dir, data, evaluation, fp32))
    best = max((t for t in trials if "error" not in t), key=lambda t: t["ndcg@10"], default=None)
    order = None
    if best:
        recipe = next(r for r in RECIPES if r.name == best["recipe"])
        primary = {"rows": {"teacher": "teacher (final)", "student": "student (final)", "int8": f"student int8 ({recipe.name})"},
                   "models": models, "fp32": fp32, "int8": run_dir / f"student.int8.{recipe.name}.onnx"}
        order = _timed(timings, "order_variant_s",
                       lambda: _order_section(settings, data, work, evaluation, primary, recipe, ease))
    report = {
        "benchmark": "models",
        "ratings": str(source),
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
        "order": order,
        "int8_recipes": trials,
        "training": {name: {k: v for k, v in s.items() if k != "curve"} for name, s in summaries.items()},
        "refit": {name: {k: v for k, v in r.items() if k != "curve"} for name, r in record.items()},
        "timings_s": timings,
        "cpu_isa": cpu_isa(),
        "published_ndcg@10": PUBLISHED_NDCG,
    }
    report["summary"] = _summary(report)
    return report


def _colour(name: str) -> str:
    return "#999" if name in BASELINES else "#d9822b" if "order-aware" in name else "#3b75af"


def _plot_cost(ax, order: dict) -> None:
    cost = order["cost_per_request"]
    names = list(cost)
    bars = ax.barh(names, [cost[n]["cpu_p50_ms"] for n in names], color=[_colour(n) for n in names])
    ax.bar_label(bars, labels=[f"{cost[n]['cpu_p50_ms']:.3f} ms, {cost[n]['mflop_per_request']:.2f} MFLOP" for n in names],
                 fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("CPU ms per request, one thread, whole catalogue (log)")
    ax.set_title(f"cost per request (order window {order['windows']['order-aware']})")


def plot(report: dict, target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "protocols" in report:
        return _plot_protocols(report, target, plt)
    order = report.get("order")
    fig, axes = plt.subplots(1, 2 if order else 1, figsize=(19 if order else 12, 7), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]} if order else None)
    ax = axes[0][0]
    names = list(report["metrics"])
    values = [report["metrics"][n]["ndcg@10"] for n in names]
    bars = ax.barh(names, values, color=[_colour(n) for n in names])
    ax.bar_label(bars, fmt="%.4f", fontsize=8)
    for label, value in report["published_ndcg@10"].items() if report["protocol"] == "msr" else ():
        ax.axvline(value, ls=":", lw=0.8, color="r")
        ax.text(value, -0.9, label, rotation=90, fontsize=7, color="r", va="top")
    ax.invert_yaxis()
    ax.set_xlabel("nDCG@10 (orange: order-aware, blue: order-blind, grey: baselines)")
    note = " (dotted: published rows, ANCHORS.md)" if report["protocol"] == "msr" else ""
    ax.set_title(f"{Path(report['ratings']).name}, protocol {report['protocol']}{note}")
    if order:
        _plot_cost(axes[0][1], order)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def _plot_protocols(report: dict, target: Path, plt) -> Path:
    """Every protocol side by side: the final and baseline rows, one bar per protocol."""
    reports = report["protocols"]
    names = [n for n in next(iter(reports.values()))["metrics"] if "(gated)" not in n]
    fig, ax = plt.subplots(figsize=(13, 0.45 * len(names) * len(reports) / 2 + 2))
    height = 0.8 / len(reports)
    palette = ["#3b75af", "#d9822b", "#4c9a4c", "#a44"]
    for j, (protocol, single) in enumerate(reports.items()):
        values = [single["metrics"].get(n, {}).get("ndcg@10", 0.0) for n in names]
        ys = [i + j * height for i in range(len(names))]
        bars = ax.barh(ys, values, height=height, color=palette[j % len(palette)], label=protocol)
        ax.bar_label(bars, fmt="%.3f", fontsize=6)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("nDCG@10")
    ax.legend(title="protocol")
    ax.set_title(f"{Path(report['ratings']).name}: every protocol")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def run(settings: Settings, ratings: Path, protocol: str = "msr") -> Path:
    """One protocol (``models`` for msr, ``models-<protocol>`` otherwise) or ``all`` (``models-all``)."""
    if protocol == "all":
        reports = {}
        for each in protocols.ALL_PROTOCOLS:
            with scratch(settings, "models-") as work:
                reports[each] = evaluate_models(settings, Path(ratings), each, work)
        summary = {"benchmark": "models", "ratings": str(ratings), "protocol": "all", "protocols": reports,
                   "summary": {p: r["summary"] for p, r in reports.items()}}
        return save(settings, "models-all", summary, plot)
    if protocol not in protocols.ALL_PROTOCOLS:
        raise InvalidInput(f"unknown protocol {protocol!r}; choose from {', '.join(protocols.ALL_PROTOCOLS)} or all")
    with scratch(settings, "models-") as work:
        report = evaluate_models(settings, Path(ratings), protocol, work)
    # One report per protocol: the msr one keeps its name (what the README and older reports point at).
    return save(settings, "models" if protocol == "msr" else f"models-{protocol}", report, plot)


def _summary(report: dict) -> dict:
    """The figures the order targets name, per protocol."""
    order = report["order"]
    if not order:
        return {}
    rows, comparisons = order["rows"], order["comparisons"]
    metrics = report["metrics"]
    return {
        "aware_int8_ndcg@10": metrics[rows["order-aware"]["int8"]]["ndcg@10"],
        "blind_int8_ndcg@10": metrics[rows["order-blind"]["int8"]]["ndcg@10"],
        "ease_ndcg@10": metrics["EASE (lambda 400)"]["ndcg@10"],
        "aware_over_blind_ndcg": comparisons["aware_int8_vs_blind_int8"]["ratio"],
        "aware_over_blind_hr": order["hr@10_ratio_aware_int8_vs_blind_int8"],
        "aware_over_ease_ndcg": comparisons["aware_int8_vs_ease"]["ratio"],
        "aware_student_over_teacher": comparisons["aware_student_vs_aware_teacher"]["ratio"],
        "teacher_over_student_flops": order["serving_budget"]["teacher_over_student_flops"],
    }
