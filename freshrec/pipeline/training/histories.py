"""Who builds a training set's histories from its event parts.

``prepare`` cuts the interactions into parts by protocol (``train``: the training part, ``full``: every interaction,
``fit``: the early-stopping cut of the time-ordered protocols) and hands them to a ``HistoryBuilder`` at once.

- ``spark_histories``: what the retrain runs. The parts go to Spark (``python -m freshrec.spark.training_input``, a
  subprocess like every Spark job the pipeline starts) and the histories come back built by the same function as
  the online snapshot serving reads (``freshrec.spark.online_snapshot.touches``): one builder and one order for
  training and serving.
- ``reference_histories``: the same rule in pandas (``dataset.timed_histories``), for the benches and unit tests that
  prepare data in-process by the thousand; tests/spark_jobs/test_history_parity.py holds it equal to Spark's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from freshrec.core.errors import DataValidationError, StageFailed
from freshrec.core.settings import Settings
from freshrec.pipeline.features.runs import run_spark_module
from freshrec.pipeline.training.dataset import INTERACTION_COLUMNS, SIGNAL_COLUMNS, Vocab, timed_histories

# user_id -> item indices (last-interaction order), user_id -> their last-interaction times, user_id -> signals
Histories = tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]
HistoryBuilder = Callable[[dict[str, pd.DataFrame], Vocab], dict[str, Histories]]
EVENTS_FILE, HISTORIES_FILE = "parts.parquet", "histories.parquet"
PARTS_SCHEMA = pa.schema([("part", pa.string()), ("user_id", pa.string()), ("item_id", pa.string()),
                          ("ts", pa.timestamp("ns", tz="UTC")), ("event_type", pa.string()), ("value", pa.float64())])


def reference_histories(parts: dict[str, pd.DataFrame], vocab: Vocab) -> dict[str, Histories]:
    return {name: timed_histories(frame, vocab) for name, frame in parts.items()}


def spark_histories(settings: Settings, folder: Path) -> HistoryBuilder:
    """A builder that runs the Spark training-input job in ``folder`` (the prepare stage's own): the labelled parts
    go in as ``parts.parquet`` (removed afterwards), the histories stay as ``histories.parquet``."""

    def build(parts: dict[str, pd.DataFrame], vocab: Vocab) -> dict[str, Histories]:
        folder.mkdir(parents=True, exist_ok=True)
        events, out = folder / EVENTS_FILE, folder / HISTORIES_FILE
        write_parts(parts, events)
        summary = run_spark_module(
            settings, "freshrec.spark.training_input", ["--home", str(settings.home), "--events", str(events), "--out", str(out)],
            lambda stderr: StageFailed(f"the Spark training-input job failed: {stderr}"))
        events.unlink(missing_ok=True)
        built = read_histories(out, vocab, list(parts))
        if summary.get("rows") != sum(len(users) for users, _, _ in built.values()):
            raise StageFailed(f"{out}: the job reported {summary.get('rows')} rows, the file holds others")
        return built

    return build


def write_parts(parts: dict[str, pd.DataFrame], path: Path) -> None:
    """One Parquet file of every part's events, labelled ``part`` (event types and values when all parts have them)."""
    signals = all(set(SIGNAL_COLUMNS) <= set(f.columns) for f in parts.values())
    schema = PARTS_SCHEMA if signals else pa.schema([PARTS_SCHEMA.field(c) for c in ("part", *INTERACTION_COLUMNS)])
    tables = [pa.Table.from_pandas(frame.assign(part=name)[schema.names], schema=schema, preserve_index=False)
              for name, frame in parts.items()]
    # microseconds: the lake's precision, and what Spark reads (it refuses nanosecond Parquet timestamps); a finer
    # timestamp is an error here rather than silently truncated (it could reorder a history)
    pq.write_table(pa.concat_tables(tables), path, coerce_timestamps="us")


def read_histories(path: Path, vocab: Vocab, names: list[str]) -> dict[str, Histories]:
    """The job's output as item indices of ``vocab``, users in id order like the reference builder's."""
    table = pq.read_table(path, columns=["part", "user_id", "items", "times", "signals"])
    index = vocab.item_index()
    out: dict[str, Histories] = {name: ({}, {}, {}) for name in names}
    columns = [table.column(c).to_pylist() for c in ("part", "user_id", "items", "times", "signals")]
    rows = sorted(zip(*columns), key=lambda row: (row[0], row[1]))
    for part, user, items, times, signals in rows:
        if part not in out:
            raise DataValidationError(f"{path}: unexpected part {part!r}")
        codes = [index.get(item) for item in items]
        if any(code is None for code in codes):
            raise DataValidationError(f"{path}: histories contain items outside the vocabulary")
        histories, timings, strengths = out[part]
        histories[user] = np.array(codes, dtype=np.int64)
        timings[user] = np.array(times, dtype=np.float64)
        if signals is not None:
            strengths[user] = np.array(signals, dtype=np.float64)
    return out
