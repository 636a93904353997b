"""One tiny trained run (teacher, students, ONNX exports) shared by the export tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.lake import clustered_events, write_clean_lake, write_item_meta


def tiny_settings(home: Path):
    from freshrec.core.settings import load_settings

    return load_settings(home=home, training={"holdout_days": 1})


def train_tiny_run(home: Path, run_name: str = "run-1") -> Path:
    from freshrec.core.layout import Layout
    from freshrec.pipeline.evaluation.evaluate import evaluate_run
    from freshrec.pipeline.training.stages import build_datasets, train_students, train_teacher

    settings = tiny_settings(home)
    layout = Layout(home)
    write_clean_lake(layout.clean_events, clustered_events(users=48, items=32, days=5))
    write_item_meta(layout.meta, items=32)
    run = layout.models / run_name
    run.mkdir(parents=True)
    build_datasets(settings, run, "temporal")
    train_teacher(settings, run, epochs=1)
    train_students(settings, run, epochs=2)
    evaluate_run(run)
    return run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run folder with data, checkpoints and torch evaluation, not exported yet."""
    return train_tiny_run(tmp_path_factory.mktemp("home"))
