"""``freshrec bench signals [--ratings FILE]``: do event types and values help the model?

The teacher's wide layer (closed-form EASE on a session-aware Gram matrix) may build its Gram matrix from each
(user, item) pair's signal, log(1 + the summed strength of the user's events on the item: a view 1, a click 2,
a purchase 5, a rating its stars), instead of 0/1. The retrain chooses between the two on its validation
split. This bench measures what that choice is worth on held-out data, full ranking, top 10, with the
retrain's own code (``prepare``, ``WideGrams``, ``select_wide``):

- a synthetic world with views, clicks, ratings and purchases (``freshrec data synth``; temporal holdout of
  the last ``HOLDOUT_DAYS`` days), and, with ``--ratings``, a MovieLens file (every event a rating, the
  value its stars; the ``msr`` split of ANCHORS.md);
- per data set: the best binary configuration and the best signal-weighted one (each chosen on the
  validation split, as the retrain does), and the one the retrain would pick; nDCG@10, recall@10 and a
  paired bootstrap interval of weighted minus binary.

JSON + PNG under reports/bench/signals.*.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
from rich.console import Console  # noqa: E402

from freshrec.core.errors import InvalidInput  # noqa: E402
from freshrec.core.settings import Settings  # noqa: E402
from freshrec.pipeline.data.movielens import read_ratings  # noqa: E402
from freshrec.pipeline.offline.metrics import paired_bootstrap, per_user_metrics, ranking_metrics  # noqa: E402
from freshrec.pipeline.offline.ranking import top_k  # noqa: E402
from freshrec.pipeline.training import prepare as prep  # noqa: E402
from freshrec.pipeline.training.dataset import normalise_interactions  # noqa: E402
from freshrec.pipeline.training.ease import WideConfig, WideGrams, candidate_configs  # noqa: E402
from freshrec.pipeline.training.stages import WIDE_DEFAULT  # noqa: E402
from freshrec.tools.bench.models import closed_form_scorer  # noqa: E402
from freshrec.tools.bench.reports import save, scratch  # noqa: E402
from freshrec.tools.data.synth import SynthConfig, synthesize  # noqa: E402

console = Console()
SYNTH = {"days": 14, "users": 2000, "items": 1000, "events_per_day": 20_000, "seed": 42}
HOLDOUT_DAYS = 2
VALIDATION_USERS = 2_000


def _ranked(weights: np.ndarray, histories: np.ndarray, seen: list) -> np.ndarray:
    return top_k(closed_form_scorer(weights), histories, seen, k=10)


def compare(data: prep.TrainingData) -> dict[str, Any]:
    """Binary vs signal-weighted Gram: each configuration's validation and holdout nDCG@10, the best of each
    kind by validation (the retrain's rule), their holdout metrics and the paired interval of the difference."""
    grams = WideGrams(data.fit, data.fit_times or None, data.vocab.n_items, WIDE_DEFAULT.session_tau_s,
                      data.fit_signals or None)
    if grams.weighted is None:
        raise InvalidInput("the data carry no event types and values: nothing to compare")
    validation, test = data.validation, data.test
    users = min(len(validation.histories), VALIDATION_USERS)
    trials: list[dict[str, Any]] = []
    best: dict[bool, tuple[float, WideConfig, np.ndarray]] = {}
    for config in candidate_configs(WIDE_DEFAULT, signals=True):
        if config.session_weight > 0 and grams.session is None:
            continue
        weights = grams.weights(config)
        val = ranking_metrics(_ranked(weights, validation.histories[:users], validation.seen[:users]),
                              validation.targets[:users], k=10)["ndcg@10"]
        trials.append({**config.to_dict(), "val_ndcg@10": val})
        if config.signal_weighting not in best or val > best[config.signal_weighting][0]:
            best[config.signal_weighting] = (val, config, weights)
    arms: dict[str, Any] = {}
    per_user: dict[str, np.ndarray] = {}
    for weighted, name in ((False, "binary"), (True, "signal_weighted")):
        val, config, weights = best[weighted]
        ranked = _ranked(weights, test.histories, test.seen)
        arms[name] = {"config": config.to_dict(), "val_ndcg@10": val,
                      **ranking_metrics(ranked, test.relevant, k=10, n_items=data.vocab.n_items)}
        per_user[name] = per_user_metrics(ranked, test.relevant, k=10)[0]["ndcg"]
        console.print(f"  {name:<16} val nDCG@10 {val:.4f}  holdout nDCG@10 {arms[name]['ndcg@10']:.4f}")
    chosen = "signal_weighted" if best[True][0] > best[False][0] else "binary"
    return {
        "counts": data.counts,
        "arms": arms,
        "retrain_would_choose": chosen,
        "weighted_vs_binary": {"ratio": arms["signal_weighted"]["ndcg@10"] / arms["binary"]["ndcg@10"],
                               **paired_bootstrap(per_user["signal_weighted"], per_user["binary"])},
        "trials": trials,
    }


def _synthetic(work: Path, world: dict[str, int]) -> pd.DataFrame:
    out = work / "synth"
    config = SynthConfig(out=out, start=dt.date(2026, 1, 1), days=world["days"], users=world["users"],
                         items=world["items"], events_per_day=world["events_per_day"], seed=world["seed"])
    for _ in synthesize(config):
        pass
    frame = pads.dataset(str(out), format="parquet", partitioning="hive").to_table(
        columns=["user_id", "item_id", "event_type", "value", "ts"]).to_pandas()
    return normalise_interactions(frame)


def _movielens(path: Path) -> pd.DataFrame:
    _, frame = read_ratings(path)
    frame = frame.rename(columns={"timestamp": "ts", "rating": "value"}).assign(event_type="rating")
    return normalise_interactions(frame)


def _prepared(settings: Settings, interactions: pd.DataFrame, protocol: str) -> prep.TrainingData:
    return prep.prepare(interactions, protocol, HOLDOUT_DAYS, settings.data.online_history_length, settings.training.seed,
                        lambda vocab: np.zeros((vocab.n_items + 1, 1), dtype=np.float32))


def plot(report: dict, target: Path) -> Path:
    names = list(report["datasets"])
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(names))
    for offset, arm in ((-0.2, "binary"), (0.2, "signal_weighted")):
        values = [report["datasets"][n]["arms"][arm]["ndcg@10"] for n in names]
        ax.bar(x + offset, values, 0.4, label=arm.replace("_", " "))
    ax.set_xticks(x, names)
    ax.set_ylabel("holdout nDCG@10 (full ranking)")
    ax.set_title("EASE wide layer: binary vs signal-weighted Gram matrix")
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target


def run(settings: Settings, ratings: Path | None = None, world: dict[str, int] = SYNTH) -> Path:
    datasets: dict[str, dict] = {}
    with scratch(settings, "bench-signals-") as work:
        console.print(f"[bold]signals bench[/] synthetic world {world}, temporal holdout {HOLDOUT_DAYS} days")
        datasets["synthetic (temporal)"] = compare(_prepared(settings, _synthetic(work, world), "temporal"))
        if ratings is not None:
            console.print(f"[bold]signals bench[/] {ratings.name}, msr split")
            datasets[f"{ratings.name} (msr)"] = compare(_prepared(settings, _movielens(ratings), "msr"))
    report = {"benchmark": "signals", "synthetic": world, "holdout_days": HOLDOUT_DAYS,
              "signal": "log(1 + summed event strength per (user, item)); strength: view 1, click 2, purchase 5, "
                        "rating its stars (freshrec.core.schemas.EVENT_WEIGHTS)",
              "datasets": datasets}
    return save(settings, "signals", report, plot)
