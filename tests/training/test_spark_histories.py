"""The retrain's training sets are built by Spark (freshrec.spark.training_input, the snapshot's ``touches``) and
equal the in-process reference the benches use, part by part, on data where orders could differ: whole-second
ties, re-touched items, unknown event types. The first two protocols cut events one way (a random share of each
history is validated), the time-ordered ones another (``fit_cut``); a ratings file has no event types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freshrec.core.errors import DataValidationError
from freshrec.core.settings import load_settings
from freshrec.pipeline.training import protocols
from freshrec.pipeline.training.dataset import Vocab
from freshrec.pipeline.training.histories import read_histories, spark_histories

pytestmark = pytest.mark.slow


def _events(seed: int, n: int = 2_000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2026-03-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 14 * 144, n) * 600, unit="s")
    kinds = rng.choice(["view", "click", "purchase", "rating", "share"], n)
    return pd.DataFrame({
        "user_id": [f"u{x}" for x in rng.integers(0, 40, n)], "item_id": [f"i{x}" for x in rng.integers(0, 60, n)],
        "ts": ts, "event_type": kinds, "value": np.where(kinds == "rating", rng.integers(1, 6, n).astype(float), 1.0),
    })


def _no_categories(vocab: Vocab) -> np.ndarray:
    return np.zeros((vocab.n_items + 1, 1), np.float32)


def _same(a, b, name: str) -> None:
    if isinstance(a, dict):
        assert list(a) == list(b), name
        a, b = list(a.values()), list(b.values())
    assert len(a) == len(b), name
    assert all(np.allclose(x, y, rtol=0, atol=1e-9) and x.dtype == y.dtype for x, y in zip(a, b)), name


@pytest.mark.parametrize("protocol, signals", [("temporal", True), ("sequential", True), ("msr", False)])
def test_spark_builds_the_reference_training_set(tmp_path: Path, protocol: str, signals: bool) -> None:
    events = _events(seed=len(protocol))
    if not signals:
        events = events.drop(columns=["event_type", "value"])
    settings = load_settings(home=tmp_path / "home")
    reference = protocols.prepare(events, protocol, 3, 50, 42, _no_categories)
    built = protocols.prepare(events, protocol, 3, 50, 42, _no_categories,
                              histories=spark_histories(settings, tmp_path / "prepare"))
    for name in ("train", "full", "fit", "train_times", "full_times", "fit_times", "train_signals", "full_signals", "fit_signals"):
        _same(getattr(reference, name), getattr(built, name), name)
    assert bool(built.full_signals) is signals
    assert np.array_equal(reference.validation.histories, built.validation.histories)
    _same(reference.validation.targets, built.validation.targets, "validation targets")
    assert np.array_equal(reference.test.histories, built.test.histories)
    assert (tmp_path / "prepare" / "histories.parquet").is_file()
    assert not (tmp_path / "prepare" / "parts.parquet").exists(), "the job's input copy of the events is removed"


def test_histories_outside_the_vocabulary_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "histories.parquet"
    pq.write_table(pa.table({"part": ["full"], "user_id": ["u"], "items": [["a", "zz"]], "times": [[1.0, 2.0]],
                             "signals": [None]}, schema=pa.schema([("part", pa.string()), ("user_id", pa.string()),
                             ("items", pa.list_(pa.string())), ("times", pa.list_(pa.float64())),
                             ("signals", pa.list_(pa.float64()))])), path)
    with pytest.raises(DataValidationError, match="outside the vocabulary"):
        read_histories(path, Vocab(items=["a"], users=["u"]), ["full"])
    assert read_histories(path, Vocab(items=["a", "zz"], users=["u"]), ["full"])["full"][0]["u"].tolist() == [1, 2]
