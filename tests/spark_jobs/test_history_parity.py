"""Training and serving see the same history for a user as of the same cut.

The online snapshot is built by the Spark features job; the training set's histories by the Spark training-input
job the retrain's dataset stage submits (freshrec.pipeline.training.histories.spark_histories), from the published
clean events. Both call one function (freshrec.spark.online_snapshot.touches): a user's distinct items by each
item's last interaction (ties by item id). This runs both on one lake, at two cuts, and compares every user; the
in-process reference builder the benches use (dataset.timed_histories) must agree with them too.
"""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from freshrec.core.layout import Layout
from freshrec.pipeline.training.dataset import build_vocab, read_clean_events
from freshrec.pipeline.training.histories import reference_histories, spark_histories
from freshrec.serving.snapshot import USERS_FILE, current_snapshot_name
from tests.spark_jobs import rawdata
from tests.spark_jobs.conftest import run_and_publish

pytestmark = pytest.mark.slow
D1, D2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)


def _snapshot_histories(layout: Layout) -> dict[str, list[str]]:
    name = current_snapshot_name(layout.online)
    assert name is not None, "no online snapshot was published"
    rows = pq.read_table(layout.online / name / USERS_FILE, columns=["user_id", "history"]).to_pylist()
    return {row["user_id"]: list(row["history"]) for row in rows}


def _training_histories(settings, through: dt.date, length: int) -> dict[str, list[str]]:
    """The retrain's histories of every interaction known at the end of ``through`` (Spark's builder), after
    checking that the in-process reference builds the same ones (items, times and signals)."""
    events = read_clean_events(Layout(settings.home).clean_events)
    events = events[events["ts"] < dt.datetime.combine(through + dt.timedelta(days=1), dt.time(), dt.UTC)]
    vocab = build_vocab(events)
    built = spark_histories(settings, settings.home / "work" / through.isoformat())({"full": events}, vocab)["full"]
    reference = reference_histories({"full": events}, vocab)["full"]
    for mine, theirs in zip(built, reference):
        assert list(mine) == list(theirs)
        assert all(np.allclose(mine[user], theirs[user], rtol=0, atol=1e-9) for user in mine)
    assert built[2], "the clean events carry event types: each item has a signal"
    return {user: [vocab.items[i - 1] for i in items[-length:]] for user, items in built[0].items()}


def _random_day(day: dt.date, rng: random.Random) -> list[dict]:
    """Many re-touched items, whole-second ties and several event types: where two orders would differ."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    rows = []
    for _ in range(400):
        ts = start + dt.timedelta(seconds=rng.randrange(0, 86_400, 600))
        kind = rng.choice(["view", "click", "purchase", "rating"])
        value = float(rng.randint(1, 5)) if kind == "rating" else 1.0
        rows.append(rawdata.event(f"u{rng.randrange(12)}", f"i{rng.randrange(15)}", kind, value,
                                  ts.isoformat().replace("+00:00", "Z")))
    return rows


def test_training_and_the_online_snapshot_see_one_history(spark, settings) -> None:
    home, layout, length = settings.home, Layout(settings.home), settings.data.online_history_length
    e = rawdata.event
    rng = random.Random(7)
    rawdata.write_parquet(home, D1, [
        e("alice", "a", "view", 1.0, "2026-03-01T08:00:00Z"),
        e("alice", "c", "click", 1.0, "2026-03-01T09:00:00Z"),
        e("alice", "b", "view", 1.0, "2026-03-01T09:00:00Z"),  # same second as c: the item id breaks the tie
        *_random_day(D1, rng),
    ])
    rawdata.write_parquet(home, D2, [
        e("alice", "d", "rating", 4.0, "2026-03-02T06:00:00Z"),
        e("alice", "a", "purchase", 9.99, "2026-03-02T07:00:00Z"),  # a again: it moves to the end
        *_random_day(D2, rng),
    ])

    run_and_publish(spark, settings, D1, D1)
    first = _snapshot_histories(layout)
    assert first["alice"] == ["a", "b", "c"]
    assert _training_histories(settings, D1, length) == first

    run_and_publish(spark, settings, D2, D2)
    second = _snapshot_histories(layout)
    assert second["alice"] == ["b", "c", "d", "a"]
    assert _training_histories(settings, D2, length) == second
    assert len(second) == 13  # alice and the twelve random users, all compared
    # The data can tell the two orders apart: by first interaction, most users' histories would differ.
    events = read_clean_events(layout.clean_events).sort_values(["ts", "item_id"], kind="stable")
    by_first = events.drop_duplicates(["user_id", "item_id"]).groupby("user_id")["item_id"].agg(list)
    assert sum(by_first[user][-length:] != history for user, history in second.items()) >= 6
