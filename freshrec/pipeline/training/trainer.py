"""Full-softmax training with early stopping, optionally distilled from a teacher.

Each step follows the denoising recipe that suits "rank unseen items from the whole history": a random
share of a user's items is kept as the input history, the dropped items are the targets of a
multinomial log-likelihood over the whole catalogue, and the kept items are masked out of the softmax
(they are "seen" at serving time too). With a teacher, the loss mixes the ground truth with a
temperature-softened KL divergence to the teacher's catalogue distribution for the same input.
Same code on CPU and CUDA; seeds fixed.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from freshrec.pipeline.offline.metrics import ranking_metrics
from freshrec.pipeline.offline.ranking import top_k, torch_scorer
from freshrec.pipeline.training.dataset import pad_histories
from freshrec.pipeline.training.models import NEG_INF, Student, Teacher, model_config


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    keep_prob: float = 0.75
    history_len: int = 256
    patience: int = 4
    temperature: float = 2.0
    distill_weight: float = 0.5  # share of the KD term when a teacher is given
    next_item_share: float = 0.0  # rows that predict the next item from the items before it (order-aware models)
    seed: int = 42
    threads: int = 1


@dataclass
class FitResult:
    model: nn.Module
    curve: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_ndcg: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class Validation:
    """Inputs (full training history) and held-out targets for early stopping."""

    histories: np.ndarray
    seen: list[np.ndarray]
    targets: list[np.ndarray]


def resolve_device(preference: str = "auto") -> str:
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def denoising_batch(
    histories: list[np.ndarray], n_rows: int, keep_prob: float, history_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(padded kept items [B, L], multi-hot dropped items [B, n_rows]) for one batch of users."""
    inputs, targets = [], np.zeros((len(histories), n_rows), dtype=np.float32)
    for row, items in enumerate(histories):
        keep = rng.random(len(items)) < keep_prob
        if len(items) > 1 and keep.all():
            keep[rng.integers(len(items))] = False
        if not keep.any():
            keep[rng.integers(len(items))] = True
        dropped = items[~keep] if (~keep).any() else items
        inputs.append(items[keep])
        targets[row, dropped] = 1.0
    return pad_histories(inputs, history_len), targets


def training_batch(histories: list[np.ndarray], n_rows: int, cfg: FitConfig, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`denoising_batch`, with a ``cfg.next_item_share`` of the rows (users with two items or more) turned
    into next-item rows: a random prefix of the ordered history (newest last) predicts the item that follows it,
    the order-aware objective of sequential recommenders (GRU4Rec, SASRec)."""
    inputs, targets = denoising_batch(histories, n_rows, cfg.keep_prob, cfg.history_len, rng)
    if cfg.next_item_share <= 0:
        return inputs, targets
    for row in np.flatnonzero(rng.random(len(histories)) < cfg.next_item_share):
        items = histories[row]
        if len(items) < 2:
            continue
        cut = int(rng.integers(1, len(items)))
        inputs[row] = pad_histories([items[:cut]], cfg.history_len)[0]
        targets[row] = 0.0
        targets[row, items[cut]] = 1.0
    return inputs, targets


def masked_logits(logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Padding column and the input items get a huge negative score (they are never recommended)."""
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask.scatter_(1, history, True)
    return logits.masked_fill(mask, NEG_INF)


def batch_loss(
    logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None, cfg: FitConfig
) -> torch.Tensor:
    log_probs = F.log_softmax(logits, dim=1)
    truth = -(targets * log_probs).sum(1) / targets.sum(1).clamp(min=1.0)
    if teacher_logits is None:
        return truth.mean()
    t = cfg.temperature
    kd = F.kl_div(
        F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1), log_target=True, reduction="batchmean"
    ) * (t * t)
    return cfg.distill_weight * kd + (1.0 - cfg.distill_weight) * truth.mean()


def validation_ndcg(model: nn.Module, validation: Validation, device: str) -> dict[str, float]:
    ranked = top_k(torch_scorer(model, device), validation.histories, validation.seen, k=10)
    return ranking_metrics(ranked, validation.targets, k=10)


def fit(
    model: Student | Teacher,
    histories: list[np.ndarray],
    validation: Validation | None,
    cfg: FitConfig,
    device: str = "cpu",
    teacher: Teacher | None = None,
    label: str = "train",
) -> FitResult:
    """Train ``model`` in place; keeps the weights of the best validation epoch (early stopping)."""
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_rows = model_config(model).n_items + 1
    users = [h for h in histories if len(h) > 0]
    result = FitResult(model=model)
    best_state, stale, started = None, 0, time.perf_counter()
    if validation is not None:  # epoch 0: an initialised model (closed form, warm start) may already be best
        initial = validation_ndcg(model, validation, device)["ndcg@10"]
        result.curve.append({"epoch": 0, "val_ndcg@10": initial, "seconds": 0.0})
        result.best_ndcg, best_state = initial, copy.deepcopy(model.state_dict())
    for epoch in tqdm(range(1, cfg.epochs + 1), desc=label, leave=False):
        model.train()
        order = rng.permutation(len(users))
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            batch = [users[i] for i in order[start : start + cfg.batch_size]]
            inputs, targets = training_batch(batch, n_rows, cfg, rng)
            history = torch.from_numpy(inputs).to(device)
            target = torch.from_numpy(targets).to(device)
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = masked_logits(teacher.catalogue_logits(history), history)
            loss = batch_loss(masked_logits(model.catalogue_logits(history), history), target, teacher_logits, cfg)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        point = {"epoch": epoch, "loss": total / max(len(users), 1), "seconds": time.perf_counter() - started}
        if validation is not None:
            point["val_ndcg@10"] = validation_ndcg(model, validation, device)["ndcg@10"]
        result.curve.append(point)
        score = point.get("val_ndcg@10", -point["loss"])
        if best_state is None or score > result.best_ndcg:
            result.best_ndcg, result.best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
