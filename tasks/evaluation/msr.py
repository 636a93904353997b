"""Offline ML-100K check under the MS Recommenders protocol, through the same training stages.

Split the ratings 75/25 per item (seed 42), train teacher, distilled student and control on the train
part, rank every item for each test user with the train items removed, and report the metrics. Used
for the model-quality targets (EASE ~0.48 nDCG@10 on this split) without running Spark or Airflow.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from freshrec.settings import Settings
from tasks.evaluation.evaluate import evaluate_run
from tasks.training import prepare as prep
from tasks.training.checkpoint import RunPaths
from tasks.training.dataset import Vocab, normalise_interactions
from tasks.training.stages import train_students, train_teacher


def read_recbole_inter(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return normalise_interactions(frame.rename(columns={"timestamp": "ts"}))


def recbole_categories(item_file: Path):
    """Genres of RecBole's ml-100k.item as the item side-feature table."""
    items = pd.read_csv(item_file, sep="\t")
    items.columns = [c.split(":")[0] for c in items.columns]
    genres = items["class"].fillna("").str.split()
    names = sorted({g for gs in genres for g in gs})

    def table(vocab: Vocab) -> np.ndarray:
        index, out = vocab.item_index(), np.zeros((vocab.n_items + 1, len(names)), dtype=np.float32)
        for item, gs in zip(items["item_id"].astype(str), genres):
            if item in index:
                for g in gs:
                    out[index[item], names.index(g)] = 1.0
        return out

    return table


def run_msr(settings: Settings, ml100k: Path, run_dir: Path, teacher_epochs: int, student_epochs: int) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    interactions = read_recbole_inter(ml100k / "ml-100k.inter")
    data = prep.prepare(interactions, "msr", settings.training.holdout_days, settings.data.online_history_length,
                        settings.training.seed, recbole_categories(ml100k / "ml-100k.item"))
    prep.save(data, RunPaths(run_dir).data)
    timings = {}
    started = time.perf_counter()
    train_teacher(settings, run_dir, teacher_epochs)
    timings["teacher_s"] = time.perf_counter() - started
    started = time.perf_counter()
    train_students(settings, run_dir, student_epochs)
    timings["students_s"] = time.perf_counter() - started
    result = json.loads(evaluate_run(run_dir).read_text())
    result["timings"] = timings
    (run_dir / "msr.json").write_text(json.dumps(result, indent=2))
    return result
