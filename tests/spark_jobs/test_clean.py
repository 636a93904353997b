"""Clean step: every quarantine class with its reason, duplicates, late events, the accounting identity."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow.dataset as pads
import pytest

from freshrec.core.layout import Layout
from tests.spark_jobs import rawdata
from tests.spark_jobs.conftest import run_and_publish

D1, D2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
pytestmark = pytest.mark.slow


def _manifest(home, day):
    return json.loads(Layout(home).manifest(day).read_text())


def test_every_quarantine_class_duplicates_and_identity(spark, settings):
    home = settings.home
    good = rawdata.regular_day(D2)
    rawdata.write_parquet(home, D2, good)
    bad_lines = [line for line, _ in rawdata.BAD_CSV_LINES.values()]
    duplicate = "u0,i0,view,1.0,2026-01-02T23:00:00Z"
    rawdata.write_csv(home, D2, bad_lines + [duplicate, duplicate, duplicate])
    truncated = '{"user_id": "u1", "item_id": "i2", "event_type": "view"'
    rawdata.write_jsonl(home, D2, [truncated, rawdata.json_line("u2", "i3", "click", 1, 1767312000)])

    run_and_publish(spark, settings, D2, D2)
    m = _manifest(home, D2)

    expected_reasons = {}
    for _, reason in rawdata.BAD_CSV_LINES.values():
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    expected_reasons["malformed_line"] += 1  # the truncated JSON line
    assert m["quarantine_reasons"] == expected_reasons
    assert m["duplicate_rows"] == 2
    input_rows = len(good) + len(bad_lines) + 3 + 2
    assert m["input_rows"] == input_rows
    assert m["input_rows"] == m["valid_rows"] + m["quarantined_rows"] + m["duplicate_rows"]
    assert m["valid_rows"] == len(good) + 1 + 1  # one copy of the duplicate + the good JSON line (epoch ts)

    quarantine = pads.dataset(str(Layout(home).quarantine / f"ds={D2}"), format="parquet").to_table().to_pandas()
    assert len(quarantine) == m["quarantined_rows"]
    by_reason = dict(zip(quarantine["raw_row"], quarantine["reason"]))
    assert by_reason["u1,i1,click"] == "malformed_line"  # the original line is kept verbatim
    assert by_reason['{"user_id": "u1", "item_id": "i2", "event_type": "view"'] == "malformed_line"
    assert set(quarantine["reason"]) == set(expected_reasons)


def test_late_event_attributed_to_event_day_once(spark, settings):
    home = settings.home
    rawdata.write_parquet(home, D1, rawdata.regular_day(D1))
    late = rawdata.event("u9", "i1", "click", 1.0, "2026-01-01T22:00:00Z")
    rawdata.write_parquet(home, D2, rawdata.regular_day(D2) + [late])
    run_and_publish(spark, settings, D1, D1)
    run_and_publish(spark, settings, D2, D2)
    run_and_publish(spark, settings, D2, D2)  # reprocessing must not count it twice

    layout = Layout(home)
    clean = pads.dataset(str(layout.clean_events), format="parquet", partitioning="hive").to_table().to_pandas()
    late_rows = clean[clean["user_id"] == "u9"]
    assert len(late_rows) == 1
    assert (late_rows["ds"].astype(str).iloc[0], late_rows["landed"].astype(str).iloc[0]) == (str(D1), str(D2))
    assert _manifest(home, D2)["late_rows"] == 1
    users_d2 = pads.dataset(str(layout.features_partition(D2) / "users"), format="parquet").to_table().to_pandas()
    assert users_d2.set_index("user_id").loc["u9", "n_click_all"] == 1
    users_d1 = pads.dataset(str(layout.features_partition(D1) / "users"), format="parquet").to_table().to_pandas()
    assert "u9" not in set(users_d1["user_id"])  # the published past is not rewritten
    assert len(clean) == _manifest(home, D1)["valid_rows"] + _manifest(home, D2)["valid_rows"]
