"""``freshrec bench retrain RATINGS``: a periodic retrain warm-started from the champion vs the same
retrain from scratch, in time and quality.

The ratings are cut in time: everything before the last ``new_days`` days trains a parent (the champion:
gated fit, then the refit on all its interactions, exactly the retrain stages). Then the retrain on all
the data runs twice with the same code, seeds and holdout (the last ``settings.training.holdout_days``):
once warm (``parent_bundle`` = the champion: vocabulary grown, new users and items get new rows, the
deep part and the student start from its weights), once cold. Reported per variant: seconds per stage
(teacher, students, refit on all), epochs, early-stopping curves, holdout metrics of teacher and
distilled student, and the paired bootstrap interval of warm minus cold. JSON + PNG under reports/bench/.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from freshrec.core.artifacts import RunLayout
from freshrec.core.schemas import BUNDLE_VOCAB
from freshrec.core.settings import Settings
from freshrec.pipeline.data.movielens import read_ratings
from freshrec.pipeline.data.movielens_meta import write_metadata
from freshrec.pipeline.evaluation.report import plot_early_stopping
from freshrec.pipeline.offline.metrics import paired_bootstrap, per_user_metrics, ranking_metrics
from freshrec.pipeline.offline.ranking import top_k, torch_scorer
from freshrec.pipeline.training import prepare as prep
from freshrec.pipeline.training.checkpoint import load_checkpoint
from freshrec.pipeline.training.dataset import Vocab, item_categories, normalise_interactions
from freshrec.pipeline.training.stages import read_training_summaries, refit_on_all, train_students, train_teacher
from freshrec.tools.bench.reports import save, scratch

console = Console()


def _stage(timings: dict, name: str, work) -> None:
    started = time.perf_counter()
    work()
    timings[name] = round(time.perf_counter() - started, 2)


def _train(settings: Settings, interactions: pd.DataFrame, run_dir: Path, meta: Path, parent: Path | None) -> dict:
    """The retrain stages on ``interactions`` (temporal holdout); returns timings, summaries and metrics."""
    parent_vocab = Vocab.load(parent / BUNDLE_VOCAB) if parent else None
    data = prep.prepare(interactions, "temporal", settings.training.holdout_days, settings.data.online_history_length,
                        settings.training.seed, lambda vocab: item_categories(meta / "items.parquet", vocab)[0], parent_vocab)
    paths = RunLayout(run_dir)
    prep.save(data, paths.training_set)
    data.vocab.save(run_dir / BUNDLE_VOCAB)
    timings: dict[str, float] = {}
    _stage(timings, "teacher", lambda: train_teacher(settings, run_dir, settings.training.teacher_epochs, parent))
    _stage(timings, "students", lambda: train_students(settings, run_dir, settings.training.student_epochs, parent))
    categories = torch.from_numpy(data.categories)
    metrics, per_user = {}, {}
    for name in ("teacher", "student"):
        model, _ = load_checkpoint(paths.checkpoint(name), categories)
        ranked = top_k(torch_scorer(model), data.test.histories, data.test.seen, k=10)
        metrics[name] = ranking_metrics(ranked, data.test.relevant, k=10, n_items=data.vocab.n_items)
        per_user[name] = per_user_metrics(ranked, data.test.relevant, k=10)[0]["ndcg"]
    _stage(timings, "refit_on_all", lambda: refit_on_all(settings, run_dir, parent))
    summaries = read_training_summaries(run_dir)
    return {
        "counts": data.counts,
        "seconds": timings,
        "seconds_total": round(sum(timings.values()), 2),
        "training": {name: {k: v for k, v in s.items() if k != "curve"} for name, s in summaries.items()},
        "curves": {name: s["curve"] for name, s in summaries.items()},
        "metrics": metrics,
        "_per_user": per_user,
    }


def compare(settings: Settings, ratings: Path, new_days: int, work: Path) -> dict:
    kind, frame = read_ratings(ratings)
    interactions = normalise_interactions(frame.rename(columns={"timestamp": "ts"}))
    meta = work / "_meta"
    write_metadata(kind, meta)
    cutoff = interactions["ts"].max() - pd.Timedelta(days=new_days)
    older = interactions[interactions["ts"] <= cutoff].reset_index(drop=True)
    console.print(f"[bold]retrain bench[/] parent on {len(older):,} interactions (to {cutoff:%Y-%m-%d}), "
                  f"retrain on {len(interactions):,}")
    parent = work / "parent"
    parent.mkdir()
    parent_run = _train(settings, older, parent, meta, None)
    variants = {}
    for name, source in (("warm", parent), ("cold", None)):
        console.print(f"  retrain, {name} start ...")
        run_dir = work / name
        run_dir.mkdir()
        variants[name] = _train(settings, interactions, run_dir, meta, source)
        console.print(f"  {name}: {variants[name]['seconds']} student nDCG@10 {variants[name]['metrics']['student']['ndcg@10']:.4f}")
    differences = {model: paired_bootstrap(variants["warm"]["_per_user"][model], variants["cold"]["_per_user"][model])
                   for model in ("teacher", "student")}
    for run in (parent_run, *variants.values()):
        run.pop("_per_user")
    return {
        "benchmark": "retrain",
        "ratings": str(ratings),
        "new_days": new_days,
        "parent": {"interactions": len(older), "through": cutoff.isoformat(), "seconds": parent_run["seconds"]},
        "variants": variants,
        "warm_minus_cold_ndcg@10": differences,
        "time_ratio_warm_over_cold": round(variants["warm"]["seconds_total"] / max(variants["cold"]["seconds_total"], 1e-9), 3),
    }


def plot(report: dict, target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = report["variants"]
    fig, (times, quality, curves) = plt.subplots(1, 3, figsize=(16, 4.5))
    stages = list(next(iter(variants.values()))["seconds"])
    for i, name in enumerate(variants):
        left = 0.0
        for stage in stages:
            value = variants[name]["seconds"][stage]
            times.barh(i, value, left=left, color=f"C{stages.index(stage)}", label=stage if i == 0 else None)
            left += value
    times.set_yticks(range(len(variants)), list(variants))
    times.set_xlabel("seconds")
    times.set_title("retrain time per stage")
    times.legend(fontsize=7)
    width = 0.35
    for j, model in enumerate(("teacher", "student")):
        values = [variants[name]["metrics"][model]["ndcg@10"] for name in variants]
        quality.bar(np.arange(len(variants)) + j * width, values, width, label=model)
    quality.set_xticks(np.arange(len(variants)) + width / 2, list(variants))
    quality.set_title(f"holdout nDCG@10 (last days; {next(iter(variants.values()))['counts']['test_users']} users)")
    quality.legend(fontsize=7)
    plot_early_stopping(curves, [(f"{model} {name}", variants[name]["curves"][model], style)
                                 for name, style in zip(variants, ("-", "--")) for model in ("teacher", "student")])
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def run(settings: Settings, ratings: Path, new_days: int = 14) -> Path:
    with scratch(settings, "retrain-") as work:
        report = compare(settings, Path(ratings), new_days, work)
    return save(settings, "retrain", report, plot)
