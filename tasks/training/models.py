"""The two scoring networks. Both follow the ONNX signature in freshrec.schemas:

    forward(history int64 [B, L], candidates int64 [B, C]) -> scores float32 [B, C]

and expose ``catalogue_logits(history) -> [B, n_items + 1]`` for full-softmax training. Scoring goes
through the whole catalogue and then gathers the candidates: the catalogue product is a MatMul with a
constant weight (what int8 quantisation accelerates) and costs the same for 1 or 1,682 candidates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

NEG_INF = -1e9


def masked_weighted_sum(embedded: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Sum of the history's item vectors scaled by 1/sqrt(n) (FISM-style); padding (index 0) ignored."""
    mask = (history != 0).to(embedded.dtype).unsqueeze(-1)
    count = mask.sum(dim=1).clamp(min=1.0)
    return (embedded * mask).sum(dim=1) / count.sqrt()


@dataclass(frozen=True)
class StudentConfig:
    n_items: int
    dim: int = 64
    hidden: int = 128


class Student(nn.Module):
    """Factored item-to-item model: user = h + MLP(h), h = weighted masked sum of history embeddings;
    score(c) = user . out[c] + bias[c]. A few hundred kFLOP per request over the whole catalogue."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        rows = config.n_items + 1
        self.item_in = nn.Embedding(rows, config.dim, padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(config.dim, config.hidden), nn.GELU(), nn.Linear(config.hidden, config.dim))
        self.item_out = nn.Parameter(torch.empty(config.dim, rows))
        self.item_bias = nn.Parameter(torch.zeros(rows))
        nn.init.normal_(self.item_in.weight, std=0.05)
        nn.init.normal_(self.item_out, std=0.05)
        with torch.no_grad():
            self.item_in.weight[0].zero_()

    def user_vector(self, history: torch.Tensor) -> torch.Tensor:
        pooled = masked_weighted_sum(self.item_in(history), history)
        return pooled + self.mlp(pooled)

    def catalogue_logits(self, history: torch.Tensor) -> torch.Tensor:
        return self.user_vector(history) @ self.item_out + self.item_bias

    def forward(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.catalogue_logits(history), 1, candidates)


@dataclass(frozen=True)
class TeacherConfig:
    n_items: int
    n_categories: int = 1
    dim: int = 512
    hidden: int = 1024
    depth: int = 3
    dropout: float = 0.2
    wide: bool = True


class Teacher(nn.Module):
    """Wide & deep recommender over the user's history.

    Deep: item embeddings plus projected item side features (categories), weighted masked sum, a deep
    residual MLP, then a product with output item vectors (again with side features). Wide: a learned
    item-to-item matrix (an EASE-like linear autoencoder term) summed over the history.
    """

    def __init__(self, config: TeacherConfig, categories: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        rows = config.n_items + 1
        if categories is None:
            categories = torch.zeros(rows, config.n_categories)
        self.register_buffer("categories", categories.float(), persistent=True)
        self.item_in = nn.Embedding(rows, config.dim, padding_idx=0)
        self.category_in = nn.Linear(config.n_categories, config.dim, bias=False)
        self.norm = nn.LayerNorm(config.dim)
        layers: list[nn.Module] = []
        width = config.dim
        for _ in range(config.depth - 1):
            layers += [nn.Linear(width, config.hidden), nn.GELU(), nn.Dropout(config.dropout)]
            width = config.hidden
        layers.append(nn.Linear(width, config.dim))
        self.head = nn.Sequential(*layers)
        self.item_out = nn.Parameter(torch.empty(config.dim, rows))
        self.category_out = nn.Linear(config.n_categories, config.dim, bias=False)
        self.item_bias = nn.Parameter(torch.zeros(rows))
        self.wide = nn.Embedding(rows, rows, padding_idx=0) if config.wide else None
        nn.init.normal_(self.item_in.weight, std=0.02)
        nn.init.normal_(self.item_out, std=0.02)
        with torch.no_grad():
            self.item_in.weight[0].zero_()
            if self.wide is not None:
                self.wide.weight.zero_()

    def catalogue_logits(self, history: torch.Tensor) -> torch.Tensor:
        items = self.item_in(history) + self.category_in(self.categories[history])
        pooled = self.norm(masked_weighted_sum(items, history))
        user = pooled + self.head(pooled)
        out_items = self.item_out + self.category_out(self.categories).T
        logits = user @ out_items + self.item_bias
        if self.wide is not None:
            logits = logits + masked_weighted_sum(self.wide(history), history)
        return logits

    def forward(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.catalogue_logits(history), 1, candidates)


def config_dict(model: nn.Module) -> dict:
    return {"kind": type(model).__name__.lower(), **asdict(model.config)}


def build_model(config: dict, categories: torch.Tensor | None = None) -> Student | Teacher:
    """Rebuild a model from ``config_dict`` output (checkpoints carry it)."""
    params = {k: v for k, v in config.items() if k != "kind"}
    if config["kind"] == "student":
        return Student(StudentConfig(**params))
    if config["kind"] == "teacher":
        return Teacher(TeacherConfig(**params), categories)
    raise ValueError(f"unknown model kind {config['kind']!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_request(model: nn.Module, history_len: int, n_candidates: int) -> int:
    """Multiply-adds x2 of one request (batch 1) scoring ``n_candidates`` with a ``history_len`` history.

    Counted analytically from the architecture (the graph has no data-dependent branches).
    """
    cfg = model.config
    rows = cfg.n_items + 1
    if isinstance(model, Student):
        macs = history_len * cfg.dim + 2 * cfg.dim * cfg.hidden + cfg.dim * rows
    else:
        macs = history_len * cfg.dim * (1 + cfg.n_categories)
        width = cfg.dim
        for _ in range(cfg.depth - 1):
            macs += width * cfg.hidden
            width = cfg.hidden
        macs += width * cfg.dim
        macs += cfg.dim * rows  # the output item vectors are constants ORT folds; only the product counts
        if cfg.wide:
            macs += history_len * rows
    return 2 * macs + n_candidates  # the gather is one read per candidate
