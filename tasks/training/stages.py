"""The training stages of a retrain run: build datasets -> teacher -> distilled student + control, and
after the gates, the refit of teacher and distilled student on all interactions (the served models).

Each stage reads and writes files in the run folder and returns paths (what the DAG passes on).
A model is fitted with early stopping on a validation split of the training part, then refitted on the
whole training part for the best epoch count (the validation items are real training signal): that
holdout-trained model is what evaluation and the gates judge. Once they have passed,
``refit_on_all`` trains the same recipe for the same epoch counts on every interaction (training part +
holdout), so the newest days reach the served weights; the holdout-trained models stay in the bundle
as ``<name>.eval.pt``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from freshrec.layout import Layout
from freshrec.schemas import BUNDLE_VOCAB
from freshrec.settings import Settings
from tasks.training import prepare as prep
from tasks.training.checkpoint import RunPaths, load_checkpoint, save_checkpoint, warm_started
from tasks.training.dataset import Vocab, item_categories, read_clean_events
from tasks.training.models import Student, StudentConfig, Teacher, TeacherConfig
from tasks.training.ease import ease_weights
from tasks.training.trainer import FitConfig, fit, resolve_device, seed_everything

log = logging.getLogger(__name__)

TEACHER = {"dim": 512, "hidden": 1024, "depth": 3, "dropout": 0.5}
STUDENT = {"dim": 128, "hidden": 256}
TEACHER_FIT = {"lr": 1e-3, "weight_decay": 0.01, "keep_prob": 0.75, "batch_size": 64, "patience": 3}
STUDENT_FIT = {"lr": 3e-4, "keep_prob": 0.75, "batch_size": 64, "patience": 3, "temperature": 1.0, "distill_weight": 0.9}
EASE_L2 = 400.0  # the teacher's wide layer; 300-500 is best on ML-100K


def build_datasets(settings: Settings, run_dir: Path, protocol: str, parent_bundle: Path | None = None) -> Path:
    layout = Layout(settings.home)
    events = read_clean_events(layout.clean_events)
    parent_vocab = Vocab.load(parent_bundle / BUNDLE_VOCAB) if parent_bundle else None
    data = prep.prepare(
        events,
        protocol=protocol,
        holdout_days=settings.training.holdout_days,
        history_len=settings.data.online_history_length,
        seed=settings.training.seed,
        categories_for=lambda vocab: item_categories(layout.meta / "items.parquet", vocab)[0],
        parent_vocab=parent_vocab,
    )
    paths = RunPaths(run_dir)
    prep.save(data, paths.data)
    data.vocab.save(run_dir / BUNDLE_VOCAB)
    log.info("datasets: %s", data.counts)
    return paths.data


Maker = Callable[[list[np.ndarray], str], nn.Module]  # (histories it trains on, "fit" | "refit") -> model


def _fit_and_refit(
    make_model: Maker, data: prep.TrainingData, cfg: FitConfig, device: str, label: str,
    teachers: dict[str, nn.Module | None] | None = None,
) -> tuple[nn.Module, nn.Module, dict]:
    """Early stopping on the validation split, then the same recipe on every training item.

    ``teachers`` maps the phase to the teacher fitted on the same data (the early-stopping phase must
    not learn from a teacher that saw the validation items). Returns (probe, final model, summary).
    """
    teachers = teachers or {}
    seed_everything(cfg.seed)
    probe = make_model(data.fit, "fit")
    stopped = fit(probe, data.fit, data.validation, cfg, device, teachers.get("fit"), label=f"{label} (early stopping)")
    seed_everything(cfg.seed)
    train = list(data.train.values())
    model = make_model(train, "refit")
    final_cfg = FitConfig(**{**cfg.__dict__, "epochs": stopped.best_epoch})
    final = fit(model, train, None, final_cfg, device, teachers.get("refit"), label=f"{label} (refit)")
    summary = {
        "curve": stopped.curve,
        "best_epoch": stopped.best_epoch,
        "best_val_ndcg@10": stopped.best_ndcg,
        "seconds_early_stopping": stopped.seconds,
        "seconds_refit": final.seconds,
        "seconds": stopped.seconds + final.seconds,
    }
    return probe.cpu().eval(), model.cpu().eval(), summary


def _parent(parent_bundle: Path | None, name: str, holdout_trained: bool = True) -> dict | None:
    """The parent bundle's checkpoint to warm-start from.

    Phases judged on this run's holdout start from the parent's holdout-trained weights
    (``<name>.eval.pt``) when it has them: its served weights were refitted on days that may lie in this
    run's holdout. The refit on all interactions starts from the served ``<name>.pt``.
    """
    if parent_bundle is None:
        return None
    files = ([f"{name}.eval.pt"] if holdout_trained else []) + [f"{name}.pt"]
    for file in files:
        if (parent_bundle / file).is_file():
            return torch.load(parent_bundle / file, map_location="cpu", weights_only=False)
    return None


def _warm(model: nn.Module, parent: dict | None, notes: dict) -> bool:
    """Load the parent's weights (grown to the new vocabulary) when there is a compatible parent."""
    if parent is None:
        notes.setdefault("warm", False)
        return False
    notes.update(warm_started(parent["config"], parent["state"], model))
    return bool(notes["warm"])


def _teacher_maker(data: prep.TrainingData, parent: dict | None, notes: dict) -> Maker:
    """Wide layer = closed-form EASE on the phase's histories; the deep part warm-starts when it can."""
    categories = torch.from_numpy(data.categories)
    config = TeacherConfig(n_items=data.vocab.n_items, n_categories=categories.shape[1], **TEACHER)

    def make(histories: list[np.ndarray], phase: str) -> nn.Module:
        model = Teacher(config, categories)
        _warm(model, parent, notes)
        with torch.no_grad():
            model.wide.copy_(torch.from_numpy(ease_weights(histories, config.n_items, EASE_L2)))
        return model

    return make


def _student_maker(data: prep.TrainingData, parent: dict | None, notes: dict, distilled: bool,
                   guides: dict[str, nn.Module]) -> Maker:
    """The distilled student starts from the parent's student (warm) or, cold, from a rank-``dim``
    factorisation of the phase's teacher item-to-item layer; the control always starts at random."""
    config = StudentConfig(n_items=data.vocab.n_items, **STUDENT)

    def make(histories: list[np.ndarray], phase: str) -> nn.Module:
        model = Student(config)
        if not distilled:  # the control never warm-starts: the champion's student learnt from a teacher
            notes["warm"] = False
        elif not _warm(model, parent, notes):
            guide = guides[phase]
            model.init_from_item_matrix(guide.wide.detach(), guide.wide_scale.item(), guide.item_bias.detach())
            notes["init"] = "teacher item-item factorisation"
        return model

    return make


def _fit_config(settings: Settings, data: prep.TrainingData, epochs: int, recipe: dict) -> FitConfig:
    return FitConfig(epochs=epochs, history_len=data.history_len, seed=settings.training.seed,
                     threads=settings.training.torch_threads, **recipe)


def train_teacher(settings: Settings, run_dir: Path, epochs: int, parent_bundle: Path | None = None) -> Path:
    """Wide layer = closed-form EASE on the phase's histories; the deep part trains (warm when possible)."""
    paths = RunPaths(run_dir)
    data = prep.load(paths.data)
    notes: dict = {}
    make = _teacher_maker(data, _parent(parent_bundle, "teacher"), notes)
    cfg = _fit_config(settings, data, epochs, TEACHER_FIT)
    probe, model, summary = _fit_and_refit(make, data, cfg, resolve_device(settings.training.device), "teacher")
    _write_summary(paths, "teacher", {**summary, "warm_start": notes, "ease_l2": EASE_L2})
    save_checkpoint(probe, paths.checkpoint("teacher_fit"))
    return save_checkpoint(model, paths.checkpoint("teacher"))


def train_students(settings: Settings, run_dir: Path, epochs: int, parent_bundle: Path | None = None) -> dict[str, str]:
    """The distilled student (served) and the control: same model and recipe on the ground truth only.

    The distilled student starts from the champion's student (warm start) or, cold, from a rank-``dim``
    factorisation of the teacher's item-to-item layer; then it learns the teacher's listwise
    distribution. The control always starts at random.
    """
    paths = RunPaths(run_dir)
    data = prep.load(paths.data)
    categories = torch.from_numpy(data.categories)
    teachers = {phase: load_checkpoint(paths.checkpoint(name), categories)[0]
                for phase, name in (("fit", "teacher_fit"), ("refit", "teacher"))}
    device = resolve_device(settings.training.device)
    cfg = _fit_config(settings, data, epochs, STUDENT_FIT)
    parent = _parent(parent_bundle, "student")
    out = {}
    for name, distilled in (("student", True), ("control", False)):
        notes: dict = {}
        make = _student_maker(data, parent, notes, distilled, teachers)
        _, model, summary = _fit_and_refit(make, data, cfg, device, name, teachers if distilled else None)
        _write_summary(paths, name, {**summary, "warm_start": notes, "distilled": distilled})
        out[name] = str(save_checkpoint(model, paths.checkpoint(name)))
    return out


def refit_reason(settings: Settings, run_dir: Path, enabled: bool | None = None) -> str | None:
    """Why the served models stay the holdout-trained ones (None: refit on all interactions)."""
    if not (settings.training.refit_on_all if enabled is None else enabled):
        return "training.refit_on_all is off: the holdout-trained models are served"
    gates = RunPaths(run_dir).work / "gates.json"
    if not gates.is_file():
        return "no gate verdict yet: the refit runs only after the gates passed"
    if not json.loads(gates.read_text())["passed"]:
        return "the gates failed: the candidate is rejected, nothing to refit for serving"
    return None


def set_aside_holdout_checkpoints(paths: RunPaths) -> None:
    """``<name>.pt`` -> ``<name>.eval.pt`` for teacher and student (once: a retried refit keeps them)."""
    for name in ("teacher", "student"):
        gated, kept = paths.checkpoint(name), paths.eval_checkpoint(name)
        if not kept.is_file():
            gated.replace(kept)


def refit_on_all(settings: Settings, run_dir: Path, parent_bundle: Path | None = None) -> Path:
    """Teacher (EASE wide layer on the full histories) and distilled student again on every interaction.

    Same recipe, same epoch counts as the holdout-trained refits (their early-stopping best epochs), warm
    start from the parent's served weights as for any phase. The gated checkpoints move to
    ``<name>.eval.pt``; the new ones take ``<name>.pt`` (what export and the next run's refit read).
    The control is not refitted (it is never served). Writes ``work/refit_on_all.json``.
    """
    paths = RunPaths(run_dir)
    data = prep.load(paths.data)
    summaries = read_training_summaries(run_dir)
    histories = [h for h in data.full.values() if len(h)]
    if not histories:
        raise ValueError(f"{paths.data} holds no full histories; rebuild the datasets with this code version")
    set_aside_holdout_checkpoints(paths)
    device = resolve_device(settings.training.device)
    record: dict = {"data": prep.training_data_facts(data, served_on_all=True), "models": {}}
    guides: dict[str, nn.Module] = {}
    for name, recipe in (("teacher", TEACHER_FIT), ("student", STUDENT_FIT)):
        epochs = int(summaries[name]["best_epoch"])
        cfg = _fit_config(settings, data, epochs, recipe)
        notes: dict = {}
        parent = _parent(parent_bundle, name, holdout_trained=False)
        if name == "teacher":
            make = _teacher_maker(data, parent, notes)
        else:
            make = _student_maker(data, parent, notes, True, guides)
        seed_everything(cfg.seed)
        model = make(histories, "all")
        result = fit(model, histories, None, cfg, device, guides.get("all") if name == "student" else None,
                     label=f"{name} (refit on all interactions)")
        model = model.cpu().eval()
        if name == "teacher":
            guides["all"] = model
        save_checkpoint(model, paths.checkpoint(name))
        record["models"][name] = {
            "epochs": epochs,
            "epochs_from": "best early-stopping epoch of the holdout-trained fit",
            "users": len(histories),
            "user_item_pairs": int(sum(len(h) for h in histories)),
            "curve": result.curve,
            "seconds": result.seconds,
            "warm_start": notes,
            "distilled": name == "student",
        }
    paths.refit.write_text(json.dumps(record, indent=2, default=str))
    log.info("refit on all interactions: %s", {k: v["user_item_pairs"] for k, v in record["models"].items()})
    return paths.refit


def _write_summary(paths: RunPaths, name: str, summary: dict) -> None:
    paths.work.mkdir(parents=True, exist_ok=True)
    (paths.work / f"{name}_training.json").write_text(json.dumps(summary, indent=2, default=str))


def read_training_summaries(run_dir: Path) -> dict[str, dict]:
    work = RunPaths(run_dir).work
    return {p.stem.removesuffix("_training"): json.loads(p.read_text()) for p in sorted(work.glob("*_training.json"))}
