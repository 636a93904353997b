"""The training stages of a retrain run: build datasets -> teacher -> distilled student + control, and
after the gates, the refit of teacher and distilled student on all interactions (the served models).

Each stage reads and writes files in the run folder and returns paths (what the DAG passes on).
A model is fitted once on the training part minus a validation split, with early stopping on that split:
that model is what evaluation and the gates judge (it never saw the holdout). Once they have passed,
``refit_on_all`` trains the same recipe for the best epoch count on every interaction (training part +
holdout), so the newest days reach the served weights; the gated models stay in the bundle as
``<name>.eval.safetensors``. (An intermediate refit on the whole training part used to sit between the two: it
cost a third of the training time and only moved the gated figures by the validation items' share.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from freshrec.core.artifacts import GateVerdict, RunLayout, read_artifact
from freshrec.core.errors import ArtifactIntegrityError, DataValidationError
from freshrec.core.layout import Layout
from freshrec.core.schemas import BUNDLE_VOCAB
from freshrec.core.settings import Settings
from freshrec.pipeline.offline.metrics import ranking_metrics
from freshrec.pipeline.offline.ranking import top_k
from freshrec.pipeline.training import prepare as prep
from freshrec.pipeline.training import protocols
from freshrec.pipeline.training.checkpoint import M, load_model, read_checkpoint, save_checkpoint, warm_started
from freshrec.pipeline.training.dataset import Vocab, item_categories, read_clean_events
from freshrec.pipeline.training.ease import WideConfig, WideGrams, select_follow, select_wide, transitions
from freshrec.pipeline.training.histories import spark_histories
from freshrec.pipeline.training.models import Student, StudentConfig, Teacher, TeacherConfig, multi_hot
from freshrec.pipeline.training.trainer import FitConfig, Validation, fit, resolve_device, seed_everything

log = logging.getLogger(__name__)

TEACHER: dict[str, Any] = {"dim": 512, "hidden": 1024, "depth": 3, "dropout": 0.5}
STUDENT: dict[str, Any] = {"dim": 256, "hidden": 256}  # plus neighbours=training.student_neighbours
# patience 2: the closed-form start is often the best epoch, and a teacher epoch is the costliest step
TEACHER_FIT: dict[str, Any] = {"lr": 1e-3, "weight_decay": 0.01, "keep_prob": 0.75, "batch_size": 64, "patience": 2}
STUDENT_FIT: dict[str, Any] = {"lr": 3e-4, "keep_prob": 0.75, "batch_size": 64, "patience": 3, "temperature": 1.0, "distill_weight": 0.9}
WIDE_DEFAULT = WideConfig()  # used as is when the catalogue is too large for the validation search
WIDE_SELECTION_USERS = 2_000  # validation users the wide layer's configurations are compared on


def build_datasets(settings: Settings, run_dir: Path, protocol: str, parent_bundle: Path | None = None) -> Path:
    layout = Layout(settings.home)
    events = read_clean_events(layout.clean_events)
    parent_vocab = Vocab.load(parent_bundle / BUNDLE_VOCAB) if parent_bundle else None
    paths = RunLayout(run_dir)
    data = protocols.prepare(
        events,
        protocol=protocol,
        holdout_days=settings.training.holdout_days,
        history_len=settings.data.online_history_length,
        seed=settings.training.seed,
        categories_for=lambda vocab: item_categories(layout.meta / "items.parquet", vocab)[0],
        parent_vocab=parent_vocab,
        histories=spark_histories(settings, paths.stage("prepare")),
    )
    prep.save(data, paths.training_set)
    data.vocab.save(run_dir / BUNDLE_VOCAB)
    log.info("datasets: %s", data.counts)
    return paths.training_set


def _parent(parent_bundle: Path | None, name: str, holdout_trained: bool = True) -> dict | None:
    """The parent bundle's checkpoint to warm-start from.

    Phases judged on this run's holdout start from the parent's holdout-trained weights
    (``<name>.eval.safetensors``) when it has them: its served weights were refitted on days that may lie in
    this run's holdout. The refit on all interactions starts from the served ``<name>.safetensors``. A parent
    from before checkpoints were safetensors (``*.pt``) has none: this run starts cold and says so.
    """
    if parent_bundle is None:
        return None
    parent = RunLayout(parent_bundle)
    files = ([parent.eval_checkpoint(name)] if holdout_trained else []) + [parent.checkpoint(name)]
    for file in files:
        if file.is_file():
            return read_checkpoint(file)
    if (parent_bundle / f"{name}.pt").is_file():
        log.warning("%s: the parent's %s checkpoint predates safetensors (.pt, not read): %s starts cold",
                    parent_bundle, name, name)
    return None


def _warm(model: nn.Module, parent: dict | None, notes: dict) -> bool:
    """Load the parent's weights (grown to the new vocabulary) when there is a compatible parent."""
    if parent is None:
        notes.setdefault("warm", False)
        return False
    notes.update(warm_started(parent["config"], parent["state"], model))
    return bool(notes["warm"])


def _wide_score(validation: Validation) -> Callable[..., float]:
    """Validation nDCG@10 of the closed-form scores (history multi-hot x B, plus the newest item's row of
    ``follow`` when given) on up to WIDE_SELECTION_USERS users."""
    users = min(len(validation.histories), WIDE_SELECTION_USERS)

    def score(weights: np.ndarray, follow: np.ndarray | None = None) -> float:
        def scorer(batch: np.ndarray) -> np.ndarray:
            out = multi_hot(torch.from_numpy(batch), weights.shape[0]).numpy() @ weights
            return out if follow is None else out + follow[batch[:, -1]]

        ranked = top_k(scorer, validation.histories[:users], validation.seen[:users], k=10)
        return ranking_metrics(ranked, validation.targets[:users], k=10)["ndcg@10"]

    return score


def _typical_top_score(weights: np.ndarray, validation: Validation) -> float:
    """The median best closed-form score (history multi-hot x B) of the validation users: the unit of the
    transition term's scale grid."""
    histories = validation.histories[:WIDE_SELECTION_USERS]
    scores = multi_hot(torch.from_numpy(histories), weights.shape[0]).numpy() @ weights
    scores[:, 0] = -np.inf
    return float(np.median(scores.max(axis=1))) or 1.0


def choose_wide(grams: WideGrams, data: prep.TrainingData, order_window: int) -> tuple[WideConfig, list[dict]]:
    """The wide layer's configuration that ranks the validation split best and, for an order-aware teacher,
    its transition term's scale and shrinkage (0 among the candidates); every trial, for the summary."""
    wide, trials = select_wide(grams, _wide_score(data.validation), WIDE_DEFAULT)
    if order_window:
        weights = grams.weights(wide)
        wide, follow_trials = select_follow(wide, weights, data.fit, _wide_score(data.validation),
                                            _typical_top_score(weights, data.validation))
        trials += follow_trials
    return wide, trials


def teacher_for(data: prep.TrainingData, histories: list[np.ndarray], times: list[np.ndarray] | None, wide: WideConfig,
                parent: dict | None, notes: dict, grams: WideGrams | None = None,
                signals: list[np.ndarray] | None = None, order_window: int = 0) -> Teacher:
    """A teacher whose wide layer is the closed-form session-aware EASE of ``histories`` plus a popularity
    prior; the deep part warm-starts from ``parent`` when the architectures agree (a correction learnt on top)."""
    categories = torch.from_numpy(data.categories)
    model = Teacher(TeacherConfig(n_items=data.vocab.n_items, n_categories=categories.shape[1], order_window=order_window,
                                  **TEACHER), categories)
    _warm(model, parent, notes)
    grams = grams or WideGrams(histories, times, data.vocab.n_items, wide.session_tau_s, signals)
    matrix, scale = model.wide_layer()
    with torch.no_grad():
        matrix.copy_(torch.from_numpy(grams.weights(wide)))
        if model.follow_wide is not None:
            follow = transitions(histories, data.vocab.n_items + 1, wide.follow_smoothing)
            model.follow_wide.copy_(torch.from_numpy(wide.follow_scale * follow))
        # the popularity prior is closed form too: recomputed from the phase's histories, warm or cold
        model.item_bias.copy_(scale * wide.popularity_prior * torch.from_numpy(grams.popularity()))
    return model


def student_for(data: prep.TrainingData, parent: dict | None, notes: dict, guide: Teacher | None,
                order_window: int = 0, neighbours: int = 0) -> Student:
    """The distilled student starts from the parent's student (warm) or, cold, from a rank-``dim``
    factorisation of its teacher's item-to-item layer; the control (``guide`` None) starts at random."""
    model = Student(StudentConfig(n_items=data.vocab.n_items, order_window=order_window, neighbours=neighbours, **STUDENT))
    if guide is None:  # the control never warm-starts: the champion's student learnt from a teacher
        notes["warm"] = False
        return model
    if not _warm(model, parent, notes):
        matrix, scale = guide.wide_layer()
        model.init_from_item_matrix(matrix.detach(), scale.item(), guide.item_bias.detach())
        notes["init"] = "teacher item-item factorisation"
    if model.successor_ids is not None and guide.follow_wide is not None and guide.wide_scale is not None \
            and bool(guide.follow_wide.any()):  # a transition term the validation split chose (scale > 0)
        # warm or cold: this teacher's transitions (new items, today's chains) pick the successors
        model.init_successors(guide.wide_scale.detach() * guide.follow_wide.detach())
        notes["successors"] = "the teacher's transition term, top successors per item"
    return model


def fit_config(settings: Settings, data: prep.TrainingData, epochs: int, recipe: dict,
               order_window: int | None = None) -> FitConfig:
    """``order_window``: the model's own (None: the settings'); next-item rows only for an order-aware model."""
    t = settings.training
    window = t.order_window if order_window is None else order_window
    return FitConfig(epochs=epochs, history_len=data.history_len, seed=t.seed, threads=t.torch_threads,
                     next_item_share=t.next_item_share if window else 0.0, **recipe)


def student_windows(settings: Settings, teacher: Teacher) -> tuple[int, ...]:
    """The students' candidate order windows, order-blind first: 0 alone when order is off or the teacher's
    validation chose no transition term, else (0, the configured window); ``train_students`` keeps the one whose
    distilled student ranks the validation split best (a tie keeps the cheaper order-blind one), unless it warm-starts
    from a champion whose window is a candidate (that one is kept). On ML-100K msr the teacher takes a small
    transition term, yet an order-aware student loses there (0.488 against 0.493)."""
    chosen = teacher.follow_wide is not None and bool(teacher.follow_wide.any())
    window = settings.training.order_window if chosen else 0
    return (0, window) if window else (0,)


def _early_stopping(model: M, data: prep.TrainingData, cfg: FitConfig, device: str, label: str,
                    teacher: Teacher | None = None) -> tuple[M, dict]:
    """Fit on the training part minus the validation split, keep the best validation epoch."""
    seed_everything(cfg.seed)
    result = fit(model, data.fit, data.validation, cfg, device, teacher, label=f"{label} (early stopping)")
    summary = {"curve": result.curve, "best_epoch": result.best_epoch, "best_val_ndcg@10": result.best_ndcg,
               "seconds": result.seconds}
    return model.cpu().eval(), summary


def train_teacher(settings: Settings, run_dir: Path, epochs: int, parent_bundle: Path | None = None) -> Path:
    """Wide layer: the session-aware EASE configuration that ranks the validation split best, in closed
    form on the fitting histories; the deep part then trains on top (warm when possible)."""
    paths = RunLayout(run_dir)
    data = prep.load(paths.training_set)
    signals = data.fit_signals if settings.training.event_signals else None
    grams = WideGrams(data.fit, data.fit_times or None, data.vocab.n_items, WIDE_DEFAULT.session_tau_s, signals or None)
    wide, trials = choose_wide(grams, data, settings.training.order_window)
    notes: dict = {}
    model = teacher_for(data, data.fit, data.fit_times, wide, _parent(parent_bundle, "teacher"), notes, grams,
                        order_window=settings.training.order_window)
    cfg = fit_config(settings, data, epochs, TEACHER_FIT)
    model, summary = _early_stopping(model, data, cfg, resolve_device(settings.training.device), "teacher")
    _write_summary(paths, "teacher", {**summary, "warm_start": notes, "wide": wide.to_dict(), "wide_trials": trials})
    return save_checkpoint(model, paths.checkpoint("teacher"))


def train_students(settings: Settings, run_dir: Path, epochs: int, parent_bundle: Path | None = None,
                   control: bool = True) -> dict[str, str]:
    """The distilled student (served) and the control: same model and recipe on the ground truth only
    (``control=False``: the distilled student alone, for benches that compare variants of it).

    The distilled student starts from the champion's student (warm start) or, cold, from a rank-``dim``
    factorisation of the teacher's item-to-item layer; then it learns the teacher's listwise
    distribution. The control always starts at random.
    """
    paths = RunLayout(run_dir)
    data = prep.load(paths.training_set)
    teacher, _ = load_model(paths.checkpoint("teacher"), Teacher, torch.from_numpy(data.categories))
    device = resolve_device(settings.training.device)
    parent = _parent(parent_bundle, "student")
    windows = student_windows(settings, teacher)
    inherited = int(parent["config"].get("order_window", 0)) if parent else None
    if inherited in windows:  # a warm start keeps the champion's choice (its weights are the cheap start)
        windows = (inherited,)
    trials: dict[int, tuple[Student, dict, dict]] = {}
    for window in windows:
        notes: dict = {}
        model = student_for(data, parent, notes, teacher, window, settings.training.student_neighbours)
        label = f"student, order window {window}" if window else "student"
        trials[window] = (*_early_stopping(model, data, fit_config(settings, data, epochs, STUDENT_FIT, window), device,
                                           label, teacher), notes)
    window = max(trials, key=lambda w: trials[w][1]["best_val_ndcg@10"])  # the first (order-blind) on a tie
    choice = {"order_window": window, "order_trials": {str(w): t[1]["best_val_ndcg@10"] for w, t in trials.items()}}
    student, summary, notes = trials[window]
    _write_summary(paths, "student", {**summary, **choice, "warm_start": notes, "distilled": True})
    out = {"student": str(save_checkpoint(student, paths.checkpoint("student")))}
    if control:  # the same architecture and recipe, from a random start, on the ground truth only
        notes = {}
        model = student_for(data, parent, notes, None, window, settings.training.student_neighbours)
        model, summary = _early_stopping(model, data, fit_config(settings, data, epochs, STUDENT_FIT, window), device,
                                         "control", None)
        _write_summary(paths, "control", {**summary, "order_window": window, "warm_start": notes, "distilled": False})
        out["control"] = str(save_checkpoint(model, paths.checkpoint("control")))
    return out


def refit_reason(settings: Settings, run_dir: Path, enabled: bool | None = None) -> str | None:
    """Why the served models stay the holdout-trained ones (None: refit on all interactions)."""
    if not (settings.training.refit_on_all if enabled is None else enabled):
        return "training.refit_on_all is off: the holdout-trained models are served"
    gates = RunLayout(run_dir).gates
    if not gates.is_file():
        return "no gate verdict yet: the refit runs only after the gates passed"
    if not read_artifact(gates, GateVerdict).passed:
        return "the gates failed: the candidate is rejected, nothing to refit for serving"
    return None


def set_aside_holdout_checkpoints(paths: RunLayout) -> None:
    """``<name>.safetensors`` -> ``<name>.eval.safetensors`` for teacher and student (once: a retried refit keeps them)."""
    for name in ("teacher", "student"):
        gated, kept = paths.checkpoint(name), paths.eval_checkpoint(name)
        if not kept.is_file():
            gated.replace(kept)


def refit(settings: Settings, data: prep.TrainingData, histories: dict[str, np.ndarray], times: dict[str, np.ndarray],
          summaries: dict[str, dict], parent_bundle: Path | None, label: str,
          signals: dict[str, np.ndarray] | None = None) -> tuple[dict[str, Student | Teacher], dict]:
    """Teacher (same wide configuration) and distilled student trained again on ``histories``, for the
    early-stopping best epoch counts, warm from the parent's served weights as for any phase.

    Returns the models and, per model, what they learnt from and how long it took."""
    users = [u for u, h in histories.items() if len(h)]
    if not users:
        raise DataValidationError("no histories to refit on: the training set holds no interactions")
    rows = [histories[u] for u in users]
    row_times = [times[u] for u in users] if times else None
    row_signals = [signals[u] for u in users] if signals else None
    device = resolve_device(settings.training.device)
    models: dict[str, Student | Teacher] = {}
    teacher: Teacher | None = None
    record: dict = {}
    for name, recipe in (("teacher", TEACHER_FIT), ("student", STUDENT_FIT)):
        epochs = int(summaries[name]["best_epoch"])
        # the teacher's window is the settings'; the student's the one its early-stopping fit chose
        window = settings.training.order_window if name == "teacher" else int(summaries["student"].get("order_window", 0))
        cfg = fit_config(settings, data, epochs, recipe, window)
        notes: dict = {}
        parent = _parent(parent_bundle, name, holdout_trained=False)
        seed_everything(cfg.seed)
        if name == "teacher":
            wide = WideConfig(**summaries["teacher"].get("wide", WIDE_DEFAULT.to_dict()))
            teacher = teacher_for(data, rows, row_times, wide, parent, notes, signals=row_signals,
                                  order_window=settings.training.order_window)
            model: Student | Teacher = teacher
            notes["wide"] = wide.to_dict()
        else:
            model = student_for(data, parent, notes, teacher, window, settings.training.student_neighbours)
        result = fit(model, rows, None, cfg, device, teacher if name == "student" else None, label=f"{name} ({label})")
        models[name] = model.cpu().eval()
        record[name] = {
            "epochs": epochs,
            "epochs_from": "best epoch of the early-stopping fit (the gated model)",
            "users": len(rows),
            "user_item_pairs": int(sum(len(h) for h in rows)),
            "curve": result.curve,
            "seconds": result.seconds,
            "warm_start": notes,
            "distilled": name == "student",
        }
    return models, record


def refit_on_all(settings: Settings, run_dir: Path, parent_bundle: Path | None = None) -> Path:
    """Teacher and distilled student again on every interaction (training part + holdout): the served models.

    The gated checkpoints move to ``<name>.eval.safetensors``; the new ones take ``<name>.safetensors`` (what
    export and the next run's refit read). The control is not refitted (it is never served). Writes
    ``work/train/refit_on_all.json``.
    """
    paths = RunLayout(run_dir)
    data = prep.load(paths.training_set)
    if not data.full:
        raise ArtifactIntegrityError(f"{paths.training_set} holds no full histories; rebuild the datasets with this code version")
    set_aside_holdout_checkpoints(paths)
    models, record = refit(settings, data, data.full, data.full_times, read_training_summaries(run_dir), parent_bundle,
                           "refit on all interactions", data.full_signals)
    for name, model in models.items():
        save_checkpoint(model, paths.checkpoint(name))
    paths.stage("train")
    paths.refit.write_text(json.dumps({"data": prep.training_data_facts(data, served_on_all=True), "models": record},
                                      indent=2, default=str))
    log.info("refit on all interactions: %s", {k: v["user_item_pairs"] for k, v in record.items()})
    return paths.refit


def _write_summary(paths: RunLayout, name: str, summary: dict) -> None:
    paths.stage("train")
    paths.training_summary(name).write_text(json.dumps(summary, indent=2, default=str))


def read_training_summaries(run_dir: Path) -> dict[str, dict]:
    folder = RunLayout(run_dir).stage("train")
    return {p.stem.removesuffix("_training"): json.loads(p.read_text()) for p in sorted(folder.glob("*_training.json"))}
