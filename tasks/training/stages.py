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

import torch
from torch import nn

from freshrec.layout import Layout
from freshrec.schemas import BUNDLE_VOCAB
from freshrec.settings import Settings
from tasks.training import prepare as prep
from tasks.training.checkpoint import RunPaths, load_checkpoint, save_checkpoint, warm_started
from tasks.training.dataset import Vocab, item_categories, read_clean_events
from tasks.training.models import Student, StudentConfig, Teacher, TeacherConfig
from tasks.training.trainer import FitConfig, fit, resolve_device, seed_everything

log = logging.getLogger(__name__)

TEACHER = {"dim": 512, "hidden": 1024, "depth": 3, "dropout": 0.2, "wide": True}
STUDENT = {"dim": 128, "hidden": 256}
TEACHER_FIT = {"lr": 1e-3, "keep_prob": 0.75, "batch_size": 64, "patience": 3}
STUDENT_FIT = {"lr": 3e-3, "keep_prob": 0.75, "batch_size": 64, "patience": 4}


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


def _fit_and_refit(
    make_model: Callable[[], nn.Module],
    data: prep.TrainingData,
    cfg: FitConfig,
    device: str,
    label: str,
    teacher: nn.Module | None = None,
) -> tuple[nn.Module, dict]:
    """Early stopping on the validation split, then the same recipe on every training item."""
    seed_everything(cfg.seed)
    probe = make_model()
    stopped = fit(probe, data.fit, data.validation, cfg, device, teacher, label=f"{label} (early stopping)")
    seed_everything(cfg.seed)
    model = make_model()
    final_cfg = FitConfig(**{**cfg.__dict__, "epochs": max(stopped.best_epoch, 1)})
    final = fit(model, list(data.train.values()), None, final_cfg, device, teacher, label=f"{label} (refit)")
    summary = {
        "curve": stopped.curve,
        "best_epoch": stopped.best_epoch,
        "best_val_ndcg@10": stopped.best_ndcg,
        "seconds_early_stopping": stopped.seconds,
        "seconds_refit": final.seconds,
        "seconds": stopped.seconds + final.seconds,
    }
    return model.cpu().eval(), summary


def _parent(parent_bundle: Path | None, name: str) -> dict | None:
    if parent_bundle is None or not (parent_bundle / f"{name}.pt").is_file():
        return None
    return torch.load(parent_bundle / f"{name}.pt", map_location="cpu", weights_only=False)


def _maker(build: Callable[[], nn.Module], parent: dict | None, notes: dict) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        model = build()
        if parent is not None:
            notes.update(warm_started(parent["config"], parent["state"], model))
        else:
            notes.setdefault("warm", False)
        return model

    return make


def train_teacher(settings: Settings, run_dir: Path, epochs: int, parent_bundle: Path | None = None) -> Path:
    paths = RunPaths(run_dir)
    data = prep.load(paths.data)
    categories = torch.from_numpy(data.categories)
    config = TeacherConfig(n_items=data.vocab.n_items, n_categories=categories.shape[1], **TEACHER)
    notes: dict = {}
    make = _maker(lambda: Teacher(config, categories), _parent(parent_bundle, "teacher"), notes)
    cfg = FitConfig(epochs=epochs, history_len=data.history_len, seed=settings.training.seed, **TEACHER_FIT)
    model, summary = _fit_and_refit(make, data, cfg, resolve_device(settings.training.device), "teacher")
    _write_summary(paths, "teacher", {**summary, "warm_start": notes})
    return save_checkpoint(model, paths.checkpoint("teacher"))


def train_students(
    settings: Settings, run_dir: Path, epochs: int, parent_bundle: Path | None = None, distill: bool = True
) -> dict[str, str]:
    """The distilled student (the one served) and the same student trained on the ground truth only."""
    paths = RunPaths(run_dir)
    data = prep.load(paths.data)
    teacher, _ = load_checkpoint(paths.checkpoint("teacher"), torch.from_numpy(data.categories))
    config = StudentConfig(n_items=data.vocab.n_items, **STUDENT)
    device = resolve_device(settings.training.device)
    cfg = FitConfig(epochs=epochs, history_len=data.history_len, seed=settings.training.seed, **STUDENT_FIT)
    out = {}
    parent = _parent(parent_bundle, "student")
    for name, guide in (("student", teacher if distill else None), ("control", None)):
        notes: dict = {}
        make = _maker(lambda: Student(config), parent, notes)
        model, summary = _fit_and_refit(make, data, cfg, device, name, teacher=guide)
        _write_summary(paths, name, {**summary, "warm_start": notes, "distilled": guide is not None})
        out[name] = str(save_checkpoint(model, paths.checkpoint(name)))
    return out


def _write_summary(paths: RunPaths, name: str, summary: dict) -> None:
    paths.work.mkdir(parents=True, exist_ok=True)
    (paths.work / f"{name}_training.json").write_text(json.dumps(summary, indent=2, default=str))


def read_training_summaries(run_dir: Path) -> dict[str, dict]:
    work = RunPaths(run_dir).work
    return {p.stem.removesuffix("_training"): json.loads(p.read_text()) for p in sorted(work.glob("*_training.json"))}
