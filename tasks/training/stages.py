"""The training stages of a retrain run: build datasets -> teacher -> distilled student + control.

Each stage reads and writes files in the run folder and returns paths (what the DAG passes on).
A model is fitted with early stopping on a validation split of the training part, then refitted on the
whole training part for the best epoch count (the validation items are real training signal).
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


def _parent(parent_bundle: Path | None, name: str) -> dict | None:
    if parent_bundle is None or not (parent_bundle / f"{name}.pt").is_file():
        return None
    return torch.load(parent_bundle / f"{name}.pt", map_location="cpu", weights_only=False)


def _warm(model: nn.Module, parent: dict | None, notes: dict) -> bool:
    """Load the parent's weights (grown to the new vocabulary) when there is a compatible parent."""
    if parent is None:
        notes.setdefault("warm", False)
        return False
    notes.update(warm_started(parent["config"], parent["state"], model))
    return bool(notes["warm"])


def train_teacher(settings: Settings, run_dir: Path, epochs: int, parent_bundle: Path | None = None) -> Path:
    """Wide layer = closed-form EASE on the phase's histories; the deep part trains (warm when possible)."""
    paths = RunPaths(run_dir)
    data = prep.load(paths.data)
    categories = torch.from_numpy(data.categories)
    config = TeacherConfig(n_items=data.vocab.n_items, n_categories=categories.shape[1], **TEACHER)
    parent, notes = _parent(parent_bundle, "teacher"), {}

    def make(histories: list[np.ndarray], phase: str) -> nn.Module:
        model = Teacher(config, categories)
        _warm(model, parent, notes)
        with torch.no_grad():
            model.wide.copy_(torch.from_numpy(ease_weights(histories, config.n_items, EASE_L2)))
        return model

    cfg = FitConfig(epochs=epochs, history_len=data.history_len, seed=settings.training.seed,
                    threads=settings.training.torch_threads, **TEACHER_FIT)
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
    config = StudentConfig(n_items=data.vocab.n_items, **STUDENT)
    device = resolve_device(settings.training.device)
    cfg = FitConfig(epochs=epochs, history_len=data.history_len, seed=settings.training.seed,
                    threads=settings.training.torch_threads, **STUDENT_FIT)
    parent = _parent(parent_bundle, "student")
    out = {}
    for name, distilled in (("student", True), ("control", False)):
        notes: dict = {}

        def make(histories: list[np.ndarray], phase: str) -> nn.Module:
            model = Student(config)
            if not distilled:  # the control never warm-starts: the champion's student learnt from a teacher
                notes["warm"] = False
            elif not _warm(model, parent, notes):
                guide = teachers[phase]
                model.init_from_item_matrix(guide.wide.detach(), guide.wide_scale.item(), guide.item_bias.detach())
                notes["init"] = "teacher item-item factorisation"
            return model

        _, model, summary = _fit_and_refit(make, data, cfg, device, name, teachers if distilled else None)
        _write_summary(paths, name, {**summary, "warm_start": notes, "distilled": distilled})
        out[name] = str(save_checkpoint(model, paths.checkpoint(name)))
    return out


def _write_summary(paths: RunPaths, name: str, summary: dict) -> None:
    paths.work.mkdir(parents=True, exist_ok=True)
    (paths.work / f"{name}_training.json").write_text(json.dumps(summary, indent=2, default=str))


def read_training_summaries(run_dir: Path) -> dict[str, dict]:
    work = RunPaths(run_dir).work
    return {p.stem.removesuffix("_training"): json.loads(p.read_text()) for p in sorted(work.glob("*_training.json"))}
