"""Pruning of the student, evaluated and kept only when it buys measured latency at equal quality.

- magnitude: the smallest |w| of every weight matrix set to zero (ORT's dense kernels skip nothing,
  so no speed-up is expected; measured anyway);
- structured: the embedding dimensions with the least weight (|in column| x |out row|) removed from
  the factorisation and the MLP, which shrinks the per-request catalogue product.
A variant is kept when its nDCG@10 is within ``max_loss`` of the unpruned student, its batch
latency is at least ``min_gain`` lower, and the holdout has enough users to tell.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from freshrec.core.artifacts import RunLayout
from freshrec.pipeline.evaluation.evaluate import evaluate_graph
from freshrec.pipeline.export.latency import onnx_latency
from freshrec.pipeline.training.models import Student, StudentConfig

BATCH = 32
MIN_USERS = 200  # below this many holdout users a 0.5% quality comparison is noise


def magnitude_pruned(student: Student, share: float) -> Student:
    pruned = copy.deepcopy(student)
    with torch.no_grad():
        for name, param in pruned.named_parameters():
            if param.dim() < 2 or name == "item_bias":
                continue
            threshold = param.abs().flatten().kthvalue(max(1, int(share * param.numel()))).values
            param.mul_((param.abs() > threshold).to(param.dtype))
    return pruned.eval()


def _mlp_linears(student: Student) -> tuple[nn.Linear, nn.Linear]:
    first, _, last = student.mlp
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)  # Student's MLP is Linear, GELU, Linear
    return first, last


def structurally_pruned(student: Student, keep_dims: int) -> Student:
    cfg = student.config
    importance = student.item_in.weight.norm(dim=0) * student.item_out.norm(dim=1)
    keep = importance.argsort(descending=True)[:keep_dims].sort().values
    small = Student(StudentConfig(n_items=cfg.n_items, dim=keep_dims, hidden=cfg.hidden, pooling_power=cfg.pooling_power))
    (small_in, small_out), (big_in, big_out) = _mlp_linears(small), _mlp_linears(student)
    with torch.no_grad():
        small.item_in.weight.copy_(student.item_in.weight[:, keep])
        small.item_out.copy_(student.item_out[keep])
        small.item_bias.copy_(student.item_bias)
        small_in.weight.copy_(big_in.weight[:, keep])
        small_in.bias.copy_(big_in.bias)
        small_out.weight.copy_(big_out.weight[keep])
        small_out.bias.copy_(big_out.bias[keep])
    return small.eval()


VARIANTS = {
    "magnitude_50": lambda student: magnitude_pruned(student, 0.5),
    "magnitude_80": lambda student: magnitude_pruned(student, 0.8),
    "structured_half_dims": lambda student: structurally_pruned(student, max(1, student.config.dim // 2)),
}


def pruned_variant(name: str, student: Student) -> Student:
    """The variant ``name`` of ``student`` (the served refit gets the variant chosen on the gated student)."""
    return VARIANTS[name](student)


def evaluate_pruning(
    run_dir: Path, student: Student, baseline_graph: Path, export, history_len: int,
    max_loss: float = 0.01, min_gain: float = 0.1,
) -> dict:
    """Measure pruned variants against ``baseline_graph``; ``export(model, path)`` writes a graph."""
    n_items = student.config.n_items
    base = evaluate_graph(run_dir, baseline_graph)["overall"]
    base_ndcg = base["ndcg@10"]
    enough_users = base["users"] >= MIN_USERS
    base_ms = onnx_latency(baseline_graph, n_items, history_len, n_items, batch=BATCH, min_calls=10)["mean_ms"]
    variants = {name: pruned_variant(name, student) for name in VARIANTS}
    trials, kept = [], None
    for name, model in variants.items():
        graph = export(model, RunLayout(run_dir).stage("export") / f"student.{name}.onnx")
        ndcg = evaluate_graph(run_dir, graph)["overall"]["ndcg@10"]
        ms = onnx_latency(graph, n_items, history_len, n_items, batch=BATCH, min_calls=10)["mean_ms"]
        trial = {"variant": name, "ndcg@10": ndcg, "batch_mean_ms": ms, "latency_gain": 1.0 - ms / base_ms,
                 "quality_ratio": ndcg / base_ndcg if base_ndcg else None}
        trial["keep"] = enough_users and ndcg >= base_ndcg * (1.0 - max_loss) and trial["latency_gain"] >= min_gain
        trials.append(trial)
        if trial["keep"] and (kept is None or ms < kept[1]["batch_mean_ms"]):
            kept = (model, trial)
        graph.unlink()
    return {
        "baseline": {"ndcg@10": base_ndcg, "batch_mean_ms": base_ms, "batch": BATCH, "users": base["users"]},
        "decision": None if enough_users else f"not kept: {base['users']} holdout users < {MIN_USERS}, too few to call quality equal",
        "trials": trials,
        "kept": kept[1]["variant"] if kept else None,
        "model": kept[0] if kept else None,
    }
