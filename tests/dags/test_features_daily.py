"""features_daily through dag.test on tiny data: a conf range, then the scheduled daily case, then a
garbage day that must fail the run and publish nothing; and a day fed only by the ingestion log."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from freshrec.core.layout import Layout
from tests.spark_jobs import rawdata

pytestmark = pytest.mark.slow
D1, D2, D3, D4 = (dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(4))


def test_publish_emits_the_features_asset(airflow_db):
    from freshrec.dags._local import load_dag
    from freshrec.dags.assets import FEATURES

    dag = load_dag("features_daily")
    assert dag.get_task("publish").outlets == [FEATURES]
    assert {p for p in dag.params} == {"from_ds", "to_ds"}
    assert dag.get_task("spark_features")._conn_id == "spark_default"
    assert dag.get_task("land_stream").downstream_task_ids == {"plan"}  # the ingestion log lands before anything looks


def test_features_daily_range_daily_and_garbage(airflow_db, freshrec_home):
    from freshrec.dags._local import run_dag

    for day in (D1, D2, D3):
        rawdata.write_parquet(freshrec_home, day, rawdata.regular_day(day, users=8, per_user=5))
    rawdata.write_csv(freshrec_home, D2, ["u1,i1,like,1.0,2026-01-02T10:00:00Z"])  # one bad row (2.4%): tolerated
    layout = Layout(freshrec_home)

    # 1. A conf range (what `freshrec pipeline run --stages features --from D1 --to D2` triggers).
    assert run_dag("features_daily", {"from_ds": D1.isoformat(), "to_ds": D2.isoformat()}) == "success"
    assert layout.feature_days() == [D1, D2]
    m2 = json.loads(layout.manifest(D2).read_text())
    assert m2["quarantine_reasons"] == {"unknown_event_type": 1}
    assert m2["input_rows"] == m2["valid_rows"] + m2["quarantined_rows"] + m2["duplicate_rows"] == 41
    assert (layout.online / "CURRENT").is_file()
    assert (layout.data_docs / "index.html").is_file()

    # 2. The scheduled case: no conf, the logical date names the day; one day adds one partition.
    assert run_dag("features_daily", {}, logical_date=dt.datetime.combine(D3, dt.time(), tzinfo=dt.UTC)) == "success"
    assert layout.feature_days() == [D1, D2, D3]
    m3 = json.loads(layout.manifest(D3).read_text())
    run3 = json.loads((layout.features_partition(D3) / "_run.json").read_text())
    assert run3["run_range"] == [D3.isoformat(), D3.isoformat()] and m3["input_rows"] == 40
    snapshot = (layout.online / "CURRENT").read_text().strip()

    # 3. A garbage day: the run fails and nothing is published.
    rng = random.Random(7)
    garbage = [",".join(rng.choice(["??", "", "x", "1e9", "drop table"]) for _ in range(5)) for _ in range(2000)]
    rawdata.write_csv(freshrec_home, D4, garbage)
    assert run_dag("features_daily", {"from_ds": D4.isoformat(), "to_ds": D4.isoformat()}) == "failed"
    assert layout.feature_days() == [D1, D2, D3]
    assert (layout.online / "CURRENT").read_text().strip() == snapshot
    assert not (layout.quarantine / f"ds={D4}").exists()


def test_a_day_fed_only_by_the_ingestion_log(airflow_db, freshrec_home):
    """No raw file for the day: the scheduled run lands the log first, so the sensor finds the partition."""
    from freshrec.core.events import WATERMARK_FILE
    from freshrec.dags._local import run_dag

    layout = Layout(freshrec_home)
    at = dt.datetime.combine(D1, dt.time(10), tzinfo=dt.UTC)
    rawdata.write_segment(layout.landing, "w1", 1, [f"e{i}" for i in range(40)], 1, at)
    rawdata.write_segment(layout.landing, "w2", 1, [f"f{i}" for i in range(10)] + ["e3"] + [f"f{i}" for i in range(11, 21)], 1, at)

    assert run_dag("features_daily", {}, logical_date=dt.datetime.combine(D1, dt.time(), tzinfo=dt.UTC)) == "success"
    assert layout.feature_days() == [D1]
    manifest = json.loads(layout.manifest(D1).read_text())
    assert manifest["input_rows"] == manifest["valid_rows"] == 60  # the repeated event_id never reached the lake
    live = layout.online / (layout.online / "CURRENT").read_text().strip()
    assert json.loads((live / WATERMARK_FILE).read_text())["writers"] == {"w1": 40, "w2": 21}
    assert len(list(layout.landing_archive.rglob("*.jsonl"))) == 2
