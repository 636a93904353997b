"""Great Expectations suites: a good batch passes, bad batches fail with the reason named."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import pandas as pd
import pytest

from freshrec.core.errors import DataValidationError
from freshrec.core.layout import Layout
from freshrec.pipeline.validation.features_suite import kl_divergence, validate_staged
from freshrec.pipeline.validation.raw_suite import validate_raw, volume_frame
from tests.spark_jobs import rawdata

D = dt.date(2026, 1, 5)


@pytest.fixture
def settings(freshrec_home):
    from freshrec.core.settings import get_settings

    return get_settings()


def test_raw_suite_tolerates_a_few_bad_rows_and_writes_data_docs(settings):
    rawdata.write_parquet(settings.home, D, rawdata.regular_day(D))  # 24 rows
    rawdata.write_csv(settings.home, D, ["u1,i1,like,1.0,2026-01-05T10:00:00Z"])  # 1 of 25 = 4% < 5%
    report = validate_raw(settings, [D])
    assert report["rows"] == 25
    assert all(s["success"] for s in report["suites"].values())
    assert Path(report["data_docs"]).is_file()
    assert (Layout(settings.home).data_docs / "index.html").read_text().count("raw_events") > 0


def test_raw_suite_rejects_a_garbage_batch(settings):
    rng = random.Random(1)
    garbage = [",".join("".join(rng.choices("xyz#%&!0123", k=rng.randint(0, 6))) for _ in range(rng.choice([3, 5, 5, 7])))
               for _ in range(300)]
    rawdata.write_parquet(settings.home, D, rawdata.regular_day(D))
    rawdata.write_csv(settings.home, D, garbage)
    with pytest.raises(DataValidationError) as info:
        validate_raw(settings, [D])
    failures = info.value.details["suites"]["raw_events"]["failures"]
    failed = {(f["expectation"], f["column"]) for f in failures}
    assert ("expect_column_values_to_be_in_set", "event_type") in failed
    assert ("expect_column_values_to_be_in_set", "malformed") in failed
    assert "Data Docs" in info.value.message


def test_volume_against_trailing_average(settings):
    days = [D + dt.timedelta(days=i) for i in range(2)]
    known = {(D - dt.timedelta(days=i)).isoformat(): 1000 for i in range(1, 8)}
    frame = volume_frame({days[0].isoformat(): 1100, days[1].isoformat(): 9000}, known, days)
    assert frame["ratio"].round(2).tolist() == [1.1, 9.0]
    assert volume_frame({days[0].isoformat(): 50}, {}, days[:1])["ratio"].isna().all()  # no published baseline
    for day in days:
        rawdata.write_parquet(settings.home, day, rawdata.regular_day(day, users=12, per_user=6))
    rawdata.write_parquet(settings.home, days[1], rawdata.regular_day(days[1], users=60, per_user=10), name="burst.parquet")
    layout = Layout(settings.home)
    for day_text in known:  # published history: manifests of 7 days of 72 rows
        (layout.features / f"ds={day_text}").mkdir(parents=True)
        (layout.features / f"ds={day_text}" / "_manifest.json").write_text(json.dumps({"input_rows": 72}))
    with pytest.raises(DataValidationError) as info:
        validate_raw(settings, days)
    assert info.value.details["suites"]["raw_volume"]["success"] is False


def _stage(root: Path, day: str, manifest: dict, users: pd.DataFrame, items: pd.DataFrame) -> None:
    folder = root / "features" / f"ds={day}"
    for name, frame in (("users", users), ("items", items)):
        (folder / name).mkdir(parents=True)
        frame.to_parquet(folder / name / "part-0.parquet")
    (folder / "_manifest.json").write_text(json.dumps(manifest))


def _valid_tables(n_events: int, kinds: list[str]):
    """Two users; u1 made the day's ``n_events`` events, spread evenly over ``kinds`` (its 1-day counts)."""
    day = {t: sum(1 for i in range(n_events) if kinds[i % len(kinds)] == t) for t in ("view", "click", "rating", "purchase")}
    users = pd.DataFrame({"user_id": ["u1", "u2"], "n_events": [n_events + 3, 1], "mean_rating": [4.0, None], "recency_days": [0.5, 1.0],
                          **{f"n_{t}_{w}": [day[t] if w == "1d" else day[t] + 1, 0] for t in day for w in ("1d", "7d", "30d", "all")}})
    items = pd.DataFrame({"item_id": ["a", "b"], "pop_all": [5, 2], "pop_30d": [4, 2], "pop_7d": [3, 1], "age_days": [3, 0],
                          "trend_7d": [1.5, 2.0], "mean_rating": [3.5, None]})
    return users, items


def _manifest(day: str, input_rows: int, quarantined: int, clean: int) -> dict:
    valid = input_rows - quarantined
    return {"ds": day, "input_rows": input_rows, "valid_rows": valid, "quarantined_rows": quarantined, "duplicate_rows": 0,
            "quarantine_reasons": {"unknown_event_type": quarantined} if quarantined else {},
            "outputs": {"users": 2, "items": 2, "clean_events": clean}}


def test_features_suite_stops_on_quarantine_share_and_drift(settings, tmp_path):
    ok = tmp_path / "ok"
    _stage(ok, "2026-01-05", _manifest("2026-01-05", 300, 3, 297), *_valid_tables(297, ["view", "click"]))
    _stage(ok, "2026-01-06", _manifest("2026-01-06", 300, 0, 300), *_valid_tables(300, ["view", "click"]))
    report = validate_staged(settings, ok)
    assert all(s["success"] for s in report["suites"].values())
    assert set(report["suites"]) == {"features_accounting", "features_users", "features_items", "features_drift"}

    too_many_bad = tmp_path / "bad_share"
    _stage(too_many_bad, "2026-01-05", _manifest("2026-01-05", 300, 30, 270), *_valid_tables(270, ["view"]))
    with pytest.raises(DataValidationError) as info:
        validate_staged(settings, too_many_bad)
    assert info.value.details["suites"]["features_accounting"]["failures"][0]["column"] == "quarantine_share"

    drifted = tmp_path / "drift"
    _stage(drifted, "2026-01-05", _manifest("2026-01-05", 300, 0, 300), *_valid_tables(300, ["view", "click"]))
    _stage(drifted, "2026-01-06", _manifest("2026-01-06", 300, 0, 300), *_valid_tables(300, ["purchase"]))
    with pytest.raises(DataValidationError) as info:
        validate_staged(settings, drifted)
    assert info.value.details["suites"]["features_drift"]["success"] is False
    assert kl_divergence({"a": 1.0}, {"a": 1.0}) == pytest.approx(0.0)


def test_features_suite_stops_when_the_tables_miss_clean_events(settings, tmp_path):
    """Every clean event of a day is counted by the users table's 1-day counts for that day."""
    short = tmp_path / "short"
    _stage(short, "2026-01-05", _manifest("2026-01-05", 300, 0, 300), *_valid_tables(290, ["view", "click"]))
    with pytest.raises(DataValidationError) as info:
        validate_staged(settings, short)
    failures = info.value.details["suites"]["features_accounting"]["failures"]
    assert [f["expectation"] for f in failures] == ["expect_column_pair_values_a_to_be_greater_than_b"]  # counted >= clean


def test_drift_baseline_is_the_published_day_before_even_from_an_older_version(settings, tmp_path):
    """The first staged day is compared with the published users table of the day before; a partition published by
    an older version (with a training_examples folder beside it) is read the same way."""
    layout = Layout(settings.home)
    _stage(layout.lake, "2026-01-04", _manifest("2026-01-04", 300, 0, 300), *_valid_tables(300, ["view", "click"]))
    old_examples = layout.features / "ds=2026-01-04" / "training_examples"
    old_examples.mkdir()
    pd.DataFrame({"user_id": ["u1"], "item_id": ["a"], "label": [1], "event_type": ["purchase"]}).to_parquet(old_examples / "p.parquet")
    drifted = tmp_path / "drift"
    _stage(drifted, "2026-01-05", _manifest("2026-01-05", 300, 0, 300), *_valid_tables(300, ["purchase"]))
    with pytest.raises(DataValidationError) as info:
        validate_staged(settings, drifted)
    assert info.value.details["suites"]["features_drift"]["success"] is False
    same = tmp_path / "same"
    _stage(same, "2026-01-05", _manifest("2026-01-05", 300, 0, 300), *_valid_tables(300, ["click", "view"]))
    assert validate_staged(settings, same)["suites"]["features_drift"]["success"]


def test_raw_suite_passes_the_landing_jobs_files(settings):
    """The landing job writes Parquet with an event_id column and the log's ts (microseconds, Z)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**row, "ts": row["ts"].replace("Z", ".123456Z"), "event_id": f"e{i}"} for i, row in enumerate(rawdata.regular_day(D))]
    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("event_type", pa.string()), ("value", pa.float64()),
                        ("ts", pa.string()), ("event_id", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), rawdata.partition(settings.home, D) / "stream-b0000000000.parquet")
    report = validate_raw(settings, [D])
    assert report["rows"] == len(rows)
    assert all(s["success"] for s in report["suites"].values())
