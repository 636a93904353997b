"""The two scoring networks. Both follow the ONNX signature in freshrec.core.schemas:

    forward(history int64 [B, L], candidates int64 [B, C]) -> scores float32 [B, C]

and expose ``catalogue_logits(history) -> [B, n_items + 1]`` for full-softmax training. Scoring goes
through the whole catalogue and then gathers the candidates: the catalogue product is a MatMul with a
constant weight (what int8 quantisation accelerates) and costs the same for 1 or 1,682 candidates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from freshrec.core.errors import ArtifactIntegrityError

NEG_INF = -1e9


def masked_weighted_sum(embedded: torch.Tensor, history: torch.Tensor, power: float = 0.5,
                        zero_padding: bool = False) -> torch.Tensor:
    """Sum of the history's item vectors scaled by n^-power (0.5 is FISM's choice, 0 a plain sum);
    padding (index 0) is ignored.

    ``zero_padding``: the embedding row of index 0 is zero (``padding_idx``), so a plain sum needs no
    mask: the exported graph is then Gather + one batched MatMul by a row of ones, without the mask's
    five elementwise nodes over [batch, history, dim] that int8 cannot speed up. The MatMul rather than
    ``sum(dim=1)``: ORT's ReduceSum over the middle axis took twice as long (ORT CPU, history 256 x 64:
    15.4 vs 8.0 us per call including the Gather)."""
    if power == 0 and zero_padding:
        ones = torch.ones_like(history, dtype=embedded.dtype).unsqueeze(1)
        return torch.matmul(ones, embedded).squeeze(1)
    mask = (history != 0).to(embedded.dtype).unsqueeze(-1)
    total = (embedded * mask).sum(dim=1)
    if power == 0:
        return total
    return total / mask.sum(dim=1).clamp(min=1.0) ** power


def multi_hot(history: torch.Tensor, rows: int) -> torch.Tensor:
    """[B, rows] with 1 at every history item; the padding column 0 stays 0."""
    hot = torch.zeros(history.shape[0], rows, dtype=torch.float32, device=history.device)
    hot = hot.scatter(1, history, 1.0)
    return hot * (torch.arange(rows, device=history.device) != 0).to(hot.dtype)


def recent_items(history: torch.Tensor, window: int) -> torch.Tensor:
    """[B, window]: the newest ``window`` items of right-aligned histories (newest last), padding (0) on the left
    when a history is shorter. The serving tier right-aligns its batches the same way."""
    return F.pad(history, (window, 0))[:, -window:]


class OrderTerms(nn.Module):
    """What makes a pooled history order-aware, at serving cost.

    ``position``: an extra weight for each of the ``window`` newest items' vectors (the newest last), added to the
    order-blind sum. ``follow``: each item's own "what comes next" vector, taken for the newest item only (a
    rank-``dim`` first-order transition model). Both start at zero, so a fresh model is its order-blind self
    (a closed-form or warm start keeps its meaning) and learns how much order matters from next-item targets.
    Cost per request: one more Gather of ``window`` rows and a [window] x [window, dim] product.
    Returns (the position-weighted sum, the newest item's follow vector)."""

    def __init__(self, rows: int, dim: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.position = nn.Parameter(torch.zeros(window))
        self.follow = nn.Embedding(rows, dim, padding_idx=0)
        nn.init.zeros_(self.follow.weight)

    def forward(self, history: torch.Tensor, embed) -> tuple[torch.Tensor, torch.Tensor]:
        recent = recent_items(history, self.window)
        # [1, 1, window] @ [B, window, dim]: a rank-3 left operand, like the pooling's row of ones, so the int8
        # row tables fold their scales into it (freshrec.pipeline.export.row_tables)
        weighted = torch.matmul(self.position.view(1, 1, -1), embed(recent)).squeeze(1)
        return weighted, self.follow(recent[:, -1])


def _keep_top(ids: torch.Tensor, scores: torch.Tensor, matrix: torch.Tensor) -> None:
    """A sparse table [rows, k] from a dense [rows, rows] score matrix: each row's k best-scored columns and their
    scores (a catalogue smaller than k leaves the rest at 0); the padding row adds nothing."""
    k = min(ids.shape[1], matrix.shape[1])
    top_scores, top_ids = matrix.float().topk(k, dim=1)
    ids.zero_()
    scores.zero_()
    ids[:, :k] = top_ids
    scores[:, :k] = top_scores
    ids[0].zero_()
    scores[0].zero_()


@dataclass(frozen=True)
class StudentConfig:
    n_items: int
    dim: int = 64
    hidden: int = 128
    pooling_power: float = 0.0
    order_window: int = 0  # newest items with learned position weights + a transition vector (0: order-blind)
    successors: int = 32  # with order_window: the newest item's top successors scored exactly (a sparse table)
    neighbours: int = 0  # every history item's top residual neighbours scored exactly (what rank ``dim`` misses)


class Student(nn.Module):
    """Factored item-to-item model: user = h + MLP(h), h = weighted masked sum of history embeddings;
    score(c) = user . out[c] + bias[c]. About a MFLOP per request over the whole catalogue.

    With a plain sum and the MLP at zero, this is a rank-``dim`` item-to-item model, so it can start
    from a factorisation of the teacher's item-to-item layer (``init_from_item_matrix``).
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        rows = config.n_items + 1
        self.item_in = nn.Embedding(rows, config.dim, padding_idx=0)
        mlp_out = nn.Linear(config.hidden, config.dim)
        self.mlp = nn.Sequential(nn.Linear(config.dim, config.hidden), nn.GELU(), mlp_out)
        self.item_out = nn.Parameter(torch.empty(config.dim, rows))
        self.item_bias = nn.Parameter(torch.zeros(rows))
        nn.init.normal_(self.item_in.weight, std=0.05)
        nn.init.normal_(self.item_out, std=0.05)
        nn.init.zeros_(mlp_out.weight)  # the residual MLP starts as the identity map
        nn.init.zeros_(mlp_out.bias)
        with torch.no_grad():
            self.item_in.weight[0].zero_()
        self.order = OrderTerms(rows, config.dim, config.order_window) if config.order_window else None
        # Each item's top successors (ids fixed from the teacher's transition term, scores learnt): a rank-``dim``
        # factorisation cannot hold an item-to-item chain (its rank is about the catalogue's), a sparse table can.
        k = config.successors if config.order_window else 0
        self.successor_ids = nn.Parameter(torch.zeros(rows, k, dtype=torch.long), requires_grad=False) if k else None
        self.successor_scores = nn.Parameter(torch.zeros(rows, k)) if k else None
        # Each item's top neighbours where a rank-``dim`` factorisation of the teacher's item-to-item layer falls
        # short most (ids fixed at the factorisation, scores learnt), summed over the whole history: the strongest
        # pairwise links exactly, at ``history x neighbours`` additions per request.
        n = config.neighbours
        self.neighbour_ids = nn.Parameter(torch.zeros(rows, n, dtype=torch.long), requires_grad=False) if n else None
        self.neighbour_scores = nn.Parameter(torch.zeros(rows, n)) if n else None

    @torch.no_grad()
    def init_from_item_matrix(self, weights: torch.Tensor, scale: float = 1.0, bias: torch.Tensor | None = None) -> None:
        """Rank-``dim`` SVD of an item x item score matrix: in = U S^1/2, out = S^1/2 V^T x scale."""
        u, sing, vt = torch.linalg.svd(weights.double())
        rank = min(self.config.dim, sing.shape[0])  # a catalogue smaller than dim leaves columns at 0
        root = sing[:rank].sqrt()
        self.item_in.weight.zero_()
        self.item_out.zero_()
        self.item_in.weight[:, :rank] = (u[:, :rank] * root).float()
        self.item_in.weight[0].zero_()
        self.item_out[:rank] = (root[:, None] * vt[:rank]).float() * scale
        if bias is not None:
            self.item_bias.copy_(bias)
        if self.neighbour_ids is not None and self.neighbour_scores is not None:
            residual = (weights.double() - (u[:, :rank] * root) @ (root[:, None] * vt[:rank])) * scale
            _keep_top(self.neighbour_ids, self.neighbour_scores, residual)

    @torch.no_grad()
    def init_successors(self, transition_scores: torch.Tensor) -> None:
        """Each item's ``successors`` best-scored next items in ``transition_scores`` [rows, rows] (what a teacher
        adds for the newest item) and those scores; the rest of each row is left out."""
        if self.successor_ids is None or self.successor_scores is None:
            raise ArtifactIntegrityError("this student is order-blind (config.order_window is 0)")
        _keep_top(self.successor_ids, self.successor_scores, transition_scores)

    def user_vector(self, history: torch.Tensor) -> torch.Tensor:
        pooled = masked_weighted_sum(self.item_in(history), history, self.config.pooling_power, zero_padding=True)
        if self.order is not None:
            weighted, follow = self.order(history, self.item_in)
            pooled = pooled + weighted + follow
        return pooled + self.mlp(pooled)

    def sparse_terms(self, history: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The exactly scored (item ids, scores) [B, n] added to the factorised scores: the newest item's
        successors, every history item's neighbours. Padding rows point at column 0 with score 0 (never a
        candidate, masked in training)."""
        terms = []
        if self.successor_ids is not None and self.successor_scores is not None:
            newest = history[:, -1]
            terms.append((self.successor_ids[newest], self.successor_scores[newest]))
        if self.neighbour_ids is not None and self.neighbour_scores is not None:
            terms.append((self.neighbour_ids[history].flatten(1), self.neighbour_scores[history].flatten(1)))
        return terms

    def catalogue_logits(self, history: torch.Tensor) -> torch.Tensor:
        logits = self.user_vector(history) @ self.item_out + self.item_bias
        for ids, scores in self.sparse_terms(history):
            logits = torch.scatter_add(logits, 1, ids, scores)
        return logits

    def forward(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.catalogue_logits(history), 1, candidates)


class CandidateStudent(nn.Module):
    """A student scored on its candidates only: the served graph of a catalogue too large to score whole, whose
    candidates come from ANN retrieval (freshrec.pipeline.export.retrieval). The same scores as ``Student`` on the
    same candidates, at O(candidates x dim) instead of O(catalogue x dim): the output vectors of the candidates
    are gathered (rows of a transposed table) before the product. The sparse terms go through a zero row of the
    catalogue's width (a memset, no multiply-adds) and are gathered like the rest."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student
        self.config = student.config

    def forward(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        s = self.student
        user = s.user_vector(history)
        vectors = F.embedding(candidates, s.item_out.t())  # [B, C, dim]
        scores = torch.matmul(vectors, user.unsqueeze(-1)).squeeze(-1) + s.item_bias[candidates]
        terms = s.sparse_terms(history)
        if terms:
            extra = torch.zeros(history.shape[0], s.item_bias.shape[0], dtype=scores.dtype)
            for ids, values in terms:
                extra = torch.scatter_add(extra, 1, ids, values)
            scores = scores + torch.gather(extra, 1, candidates)
        return scores


class UserTower(nn.Module):
    """What ANN retrieval asks of a student: the user's query vector [B, dim + 1] (its last component 1, against
    each item's bias stored beside its output vector: score = query . [out_c; bias_c]) and the item ids its sparse
    terms score exactly [B, n] (candidates the factorised product may miss; 0 is padding)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        user = self.student.user_vector(history)
        query = torch.cat([user, torch.ones_like(user[:, :1])], dim=1)
        ids = [ids for ids, _ in self.student.sparse_terms(history)]
        extra = torch.cat(ids, dim=1) if ids else torch.zeros_like(history[:, -1:])
        return query, extra


def item_keys(student: Student) -> torch.Tensor:
    """[n_items, dim + 1]: each item's output vector and bias, the vectors a UserTower query is matched against
    (row i is item index i + 1; the padding row is left out)."""
    return torch.cat([student.item_out.t(), student.item_bias.unsqueeze(1)], dim=1)[1:].detach()


@dataclass(frozen=True)
class TeacherConfig:
    n_items: int
    n_categories: int = 1
    dim: int = 512
    hidden: int = 1024
    depth: int = 3
    dropout: float = 0.2
    wide: bool = True
    wide_scale: float = 10.0
    wide_trainable: bool = False  # closed-form (EASE) weights stay fixed; the deep part learns the residual
    order_window: int = 0  # as StudentConfig.order_window, on the deep part's pooled history


class Teacher(nn.Module):
    """Wide & deep recommender over the user's history.

    Deep: item embeddings plus projected item side features (categories), weighted masked sum, a deep
    residual MLP, then a product with output item vectors (again with side features). Wide: a learned
    item-to-item matrix (an EASE-like linear autoencoder term) summed over the history.
    """

    categories: torch.Tensor  # a registered buffer

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
        # a dense item x item matrix applied to the multi-hot history: one matmul, cheap to train
        self.wide = nn.Parameter(torch.zeros(rows, rows), requires_grad=config.wide_trainable) if config.wide else None
        # the wide term is a plain sum (like EASE's x.B); its scale to softmax logits is learned
        self.wide_scale = nn.Parameter(torch.tensor(config.wide_scale)) if config.wide else None
        # order-aware: the newest item's row of a closed-form transition matrix joins the wide term
        self.follow_wide = (nn.Parameter(torch.zeros(rows, rows), requires_grad=False)
                            if config.wide and config.order_window else None)
        nn.init.normal_(self.item_in.weight, std=0.02)
        # The deep output starts at zero, so an initialised wide layer (EASE) is the starting model
        # and the deep part learns a correction to it.
        nn.init.zeros_(self.item_out)
        nn.init.zeros_(self.category_out.weight)
        with torch.no_grad():
            self.item_in.weight[0].zero_()
        self.order = OrderTerms(rows, config.dim, config.order_window) if config.order_window else None

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_in(items) + self.category_in(self.categories[items])

    def wide_layer(self) -> tuple[nn.Parameter, nn.Parameter]:
        """(item x item matrix, its scale); a teacher built without a wide layer has none to give."""
        if self.wide is None or self.wide_scale is None:
            raise ArtifactIntegrityError("this teacher has no wide layer (config.wide is off)")
        return self.wide, self.wide_scale

    def catalogue_logits(self, history: torch.Tensor) -> torch.Tensor:
        pooled = masked_weighted_sum(self.item_vectors(history), history)
        if self.order is not None:
            weighted, follow = self.order(history, self.item_vectors)
            pooled = pooled + weighted + follow
        pooled = self.norm(pooled)
        user = pooled + self.head(pooled)
        out_items = self.item_out + self.category_out(self.categories).T
        logits = user @ out_items + self.item_bias
        if self.wide is not None and self.wide_scale is not None:  # both exist exactly when config.wide
            wide = multi_hot(history, logits.shape[1]) @ self.wide
            if self.follow_wide is not None:
                wide = wide + self.follow_wide[history[:, -1]]
            logits = logits + self.wide_scale * wide
        return logits

    def forward(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.catalogue_logits(history), 1, candidates)


def model_config(model: nn.Module) -> StudentConfig | TeacherConfig:
    if isinstance(model, CandidateStudent):
        return model.config
    if not isinstance(model, (Student, Teacher)):
        raise TypeError(f"not a Student or Teacher: {type(model).__name__}")
    return model.config


def config_dict(model: nn.Module) -> dict:
    return {"kind": type(model).__name__.lower(), **asdict(model_config(model))}


def build_model(config: dict, categories: torch.Tensor | None = None) -> Student | Teacher:
    """Rebuild a model from ``config_dict`` output (checkpoints carry it)."""
    params = {k: v for k, v in config.items() if k != "kind"}
    if config["kind"] == "student":
        return Student(StudentConfig(**params))
    if config["kind"] == "teacher":
        return Teacher(TeacherConfig(**params), categories)
    raise ArtifactIntegrityError(f"unknown model kind {config['kind']!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_request(model: nn.Module, history_len: int, n_candidates: int) -> int:
    """Multiply-adds x2 of one request (batch 1) scoring ``n_candidates`` with a ``history_len`` history.

    Counted analytically from the architecture (the graph has no data-dependent branches).
    """
    cfg = model_config(model)
    rows = cfg.n_items + 1
    # order terms: the window's weighted sum (its vectors are gathered again) plus the transition vector
    order = cfg.order_window * cfg.dim + cfg.dim if cfg.order_window else 0
    if isinstance(cfg, StudentConfig):
        macs = history_len * cfg.dim + order + 2 * cfg.dim * cfg.hidden + cfg.dim * rows
        macs += cfg.successors if cfg.order_window else 0  # the newest item's successors, added to their scores
        macs += history_len * cfg.neighbours  # every history item's neighbours, added to their scores
    else:
        macs = history_len * cfg.dim * (1 + cfg.n_categories) + order * (1 + cfg.n_categories)
        width = cfg.dim
        for _ in range(cfg.depth - 1):
            macs += width * cfg.hidden
            width = cfg.hidden
        macs += width * cfg.dim
        macs += cfg.dim * rows  # the output item vectors are constants ORT folds; only the product counts
        if cfg.wide:
            macs += rows * rows  # multi-hot history x item-item matrix
            macs += rows if cfg.order_window else 0  # plus the newest item's transition row
    return 2 * macs + n_candidates  # the gather is one read per candidate
