"""Offline evaluation of a run's models on its holdout: full ranking, seen items removed, cold slice.

The champion is evaluated on the *same* holdout through its exported graph: its vocabulary is a prefix
of the current one (ids are stable), so items it never saw are padding in its input and unscorable.
The graph is the champion's holdout-trained int8 student (``student.eval.int8.onnx``) when its bundle
has one: its served graph was refitted on all of its interactions, which may include the earlier days
of this run's holdout, so judging it on that holdout would flatter it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from freshrec.core.artifacts import EvalReport, RunLayout, write_artifact
from freshrec.core.errors import ArtifactIntegrityError
from freshrec.core.schemas import BUNDLE_VOCAB
from freshrec.pipeline.offline.metrics import paired_bootstrap, per_user_metrics, ranking_metrics
from freshrec.pipeline.offline.ranking import Scorer, onnx_scorer, top_k, torch_scorer
from freshrec.pipeline.training import prepare as prep
from freshrec.pipeline.training.checkpoint import load_checkpoint
from freshrec.pipeline.training.dataset import Vocab

log = logging.getLogger(__name__)
TORCH_MODELS = ("teacher", "student", "control")


def evaluate_scorer(scorer: Scorer, test: prep.EvalSet, n_items: int, k: int = 10, per_user: dict | None = None,
                    name: str | None = None) -> dict:
    """Overall and cold-user metrics; with ``per_user``, also stores ``per_user[name]`` = each user's nDCG@k
    (for paired comparisons of models on the same users)."""
    ranked = top_k(scorer, test.histories, test.seen, k=k)
    overall = ranking_metrics(ranked, test.relevant, k=k, n_items=n_items)
    if per_user is not None:
        per_user[name] = per_user_metrics(ranked, test.relevant, k=k)[0]["ndcg"]
    result = {"overall": overall}
    if test.cold.any():
        cold = np.flatnonzero(test.cold)
        result["cold_users"] = ranking_metrics(ranked[cold], [test.relevant[i] for i in cold], k=k, n_items=n_items)
    return result


CHAMPION_GRAPHS = ("student.eval.int8.onnx", "student.int8.onnx", "student.fp32.onnx")


def champion_graph(bundle: Path) -> Path:
    """The graph an older bundle is compared with: its holdout-trained int8 student, else (bundles from
    before the refit on all interactions, or with it off) the served int8, else the served fp32."""
    for name in CHAMPION_GRAPHS:
        if (bundle / name).is_file():
            return bundle / name
    raise FileNotFoundError(f"no student graph in {bundle} (looked for {', '.join(CHAMPION_GRAPHS)})")


def champion_scorer(bundle: Path, vocab: Vocab) -> Scorer:
    """Scores the current catalogue with an older bundle's :func:`champion_graph`."""
    old = Vocab.load(bundle / BUNDLE_VOCAB)
    if vocab.items[: old.n_items] != old.items:
        raise ArtifactIntegrityError(f"champion vocabulary in {bundle} is not a prefix of the current one")
    inner = onnx_scorer(champion_graph(bundle), old.n_items)

    def score(history: np.ndarray) -> np.ndarray:
        clipped = np.where(history > old.n_items, 0, history)
        scores = np.full((len(history), vocab.n_items + 1), -np.inf, dtype=np.float32)
        scores[:, : old.n_items + 1] = inner(clipped)
        return scores

    return score


def evaluate_run(run_dir: Path, champion_bundle: Path | None = None) -> Path:
    """Metrics of teacher, student, control (torch) and the champion; writes work/evaluate/evaluation.json."""
    paths = RunLayout(run_dir)
    data = prep.load(paths.training_set)
    import torch

    categories = torch.from_numpy(data.categories)
    results: dict = {"protocol": data.protocol, "cutoff": data.cutoff, "counts": data.counts, "models": {}}
    per_user: dict[str, np.ndarray] = {}
    for name in TORCH_MODELS:
        ckpt = paths.checkpoint(name)
        if ckpt.is_file():
            model, _ = load_checkpoint(ckpt, categories)
            results["models"][name] = evaluate_scorer(torch_scorer(model), data.test, data.vocab.n_items, per_user=per_user, name=name)
    if champion_bundle is not None:
        try:
            results["models"]["champion"] = evaluate_scorer(champion_scorer(champion_bundle, data.vocab), data.test,
                                                            data.vocab.n_items, per_user=per_user, name="champion")
            results["champion_graph"] = champion_graph(champion_bundle).name
        except (ArtifactIntegrityError, FileNotFoundError) as exc:
            log.warning("champion not comparable: %s", exc)
            results["champion_error"] = str(exc)
    # Paired 95% intervals of the nDCG@10 differences: a temporal holdout of a few days can hold a few dozen
    # users, where a difference of one hit is noise; the interval says which differences the data shows.
    results["comparisons"] = {f"{a}_minus_{b}": paired_bootstrap(per_user[a], per_user[b])
                              for a, b in (("student", "control"), ("student", "teacher"), ("student", "champion"))
                              if a in per_user and b in per_user}
    return write_artifact(paths.evaluation, EvalReport.model_validate(results))


def fidelity_set(data: prep.TrainingData) -> prep.EvalSet:
    """The users for *paired* comparisons of two graphs of one model (int8 vs fp32).

    A 1% relative tolerance means nothing on a few dozen users, and a temporal holdout of the last days
    can be that small (ML-100K: 49 users). The early-stopping validation split ranks nearly every user,
    so whichever of the two ranks more users is used. The comparison is paired, so the validation
    split's use in early stopping biases both graphs alike.
    """
    validation = data.validation
    if len(validation.targets) <= len(data.test.relevant):
        return data.test
    return prep.EvalSet(
        users=[],
        histories=validation.histories,
        seen=validation.seen,
        relevant=validation.targets,
        cold=np.zeros(len(validation.targets), dtype=bool),
    )


def evaluate_graph(run_dir: Path, graph: Path, fidelity: bool = False) -> dict:
    """Metrics of an exported graph on the holdout, or on :func:`fidelity_set` when ``fidelity``."""
    data = prep.load(RunLayout(run_dir).training_set)
    users = fidelity_set(data) if fidelity else data.test
    return evaluate_scorer(onnx_scorer(graph, data.vocab.n_items), users, data.vocab.n_items)
