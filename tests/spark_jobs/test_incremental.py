"""A daily run carries the previous day's state instead of reading all history: it must publish exactly what a
full recompute publishes (tables, manifests, online snapshot, next state), with late events, re-deliveries,
quarantined rows, days without data and windows that slide past the carried days."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from freshrec.core.layout import Layout
from freshrec.spark.features import run_features
from freshrec.spark.publish import publish_run
from freshrec.spark.state import STATE_DIR, TABLES
from tests.spark_jobs import rawdata

pytestmark = pytest.mark.slow
D0 = dt.date(2026, 3, 1)
KINDS = ["view", "click", "rating", "purchase"]


def day(i: int) -> dt.date:
    return D0 + dt.timedelta(days=i)


def _iso(d: dt.date, hour: int, minute: int = 0) -> str:
    return f"{d.isoformat()}T{hour:02d}:{minute:02d}:00Z"


def _regular(i: int) -> list[dict]:
    rows = []
    for u in range(5):
        for k in range(3):
            kind = KINDS[(u + k + i) % 4]
            value = float(1 + (u + 2 * k + i) % 5) if kind == "rating" else 1.0
            rows.append(rawdata.event(f"u{(u + i) % 7}", f"i{(u * 3 + k + i) % 9}", kind, value, _iso(day(i), 1 + u, 7 * k + i)))
    return rows


def _land(home: Path, i: int) -> None:
    """Day i's delivery: regular events plus the awkward cases, depending on the day."""
    rows = _regular(i)
    e = rawdata.event
    if i == 1:
        rows += [rows[0], e("u1", "i2", "view", 1.0, _iso(day(2), 0, 20))]  # a copy in the batch; next day's event, early
    if i == 2:
        rows += _regular(1)[:2]  # re-delivered events of the day before
        rawdata.write_csv(home, day(i), [line for line, _ in rawdata.BAD_CSV_LINES.values()], name="bad.csv")
    if i == 3:
        rows += [e("u3", "i4", "rating", 5.0, _iso(day(1), 23, 59)), e("u6", "i8", "purchase", 2.0, _iso(day(2), 4))]  # late
    if i == 4:
        rows += [_regular(0)[3], e("u0", "i7", "click", 1.0, _iso(day(0), 0, 1))]  # an old event re-delivered; a very late one
    if i == 5:
        rows += [e("u99", "i1", "rating", 3.0, _iso(day(5), 6)), e("u2", "i0", "view", 1.0, _iso(day(3), 9))]
    if i >= 40:  # sparse late life: a late event of a day that left the 30-day window of the carried state
        rows += [e("u4", "i5", "rating", 4.0, _iso(day(i - 35), 12))]
    rawdata.write_parquet(home, day(i), rows)


def _stage(spark, settings, first: dt.date, last: dt.date, incremental: bool = True) -> tuple[Path, dict]:
    staging = Layout(settings.home).lake / "_staging" / uuid.uuid4().hex
    return staging, run_features(spark, settings, first, last, staging, incremental=incremental)


def _rows(folder: Path) -> tuple[list[str], list[str]]:
    if not folder.exists():
        return [], []
    table = pads.dataset(str(folder), format="parquet").to_table()
    return table.schema.names, sorted(repr(row) for row in table.to_pylist())


def _outputs(features: Path, online: Path, days: list[dt.date], state: bool = True) -> dict:
    """Everything a run publishes for these days (and the state of the last one), comparable with ==."""
    out = {}
    for d in days:
        part = features / f"ds={d.isoformat()}"
        out[f"{d}/manifest"] = json.loads((part / "_manifest.json").read_text())
        for table in ("users", "items"):
            out[f"{d}/{table}"] = _rows(part / table)
    if state:
        for table in TABLES:
            out[f"state/{table}"] = _rows(features / f"ds={days[-1].isoformat()}" / STATE_DIR / table)
    for name in ("users.parquet", "items.parquet"):
        out[f"online/{name}"] = pq.read_table(online / name).to_pylist()
    return out


def _staged(staging: Path, days: list[dt.date]) -> dict:
    return _outputs(staging / "features", staging / "online", days)


def _published(home: Path, days: list[dt.date], state: bool = True) -> dict:
    layout = Layout(home)
    current = (layout.online / "CURRENT").read_text().strip()
    return _outputs(layout.features, layout.online / current, days, state)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key


def _daily_matches_full(spark, settings, i: int, expect_incremental: bool) -> dict:
    """Stage day i both ways on the same lake, check they agree, publish the incremental one."""
    full, _ = _stage(spark, settings, day(i), day(i), incremental=False)
    expected = _staged(full, [day(i)])
    shutil.rmtree(full)
    staging, run = _stage(spark, settings, day(i), day(i))
    assert run["mode"]["incremental"] is expect_incremental, run["mode"]
    _assert_same(_staged(staging, [day(i)]), expected)
    publish_run(Layout(settings.home), staging)
    return run


def test_day_by_day_matches_full_recompute_and_bootstrap(spark, settings, tmp_path):
    for i in range(6):
        _land(settings.home, i)
    runs = [_daily_matches_full(spark, settings, i, expect_incremental=i > 0) for i in range(6)]
    assert "no state" in runs[0]["mode"]["reason"]
    days = [day(i) for i in range(6)]
    manifests = [json.loads(Layout(settings.home).manifest(d).read_text()) for d in days]
    assert manifests[1]["duplicate_rows"] == 1 and manifests[2]["duplicate_rows"] == 2 and manifests[4]["duplicate_rows"] == 1
    assert manifests[2]["quarantined_rows"] == len(rawdata.BAD_CSV_LINES)
    assert manifests[3]["late_rows"] == 2 and manifests[4]["late_rows"] == 1

    # One bootstrap run over the same deliveries: same accounting of every delivery; the same tables as of the
    # last day, snapshot and state. Earlier days differ by design, in a full recompute as well: a range run
    # attributes its later landings' late events to their event days (features, clean_events counts).
    boot = settings.model_copy(update={"home": tmp_path / "boot"})
    shutil.copytree(Layout(settings.home).raw_events, Layout(boot.home).raw_events)
    staging, run = _stage(spark, boot, day(0), day(5))
    assert not run["mode"]["incremental"]
    publish_run(Layout(boot.home), staging)
    daily, bootstrap = _published(settings.home, days), _published(boot.home, days)
    accounting = ("input_rows", "valid_rows", "quarantined_rows", "duplicate_rows", "late_rows", "quarantine_reasons", "input_partitions")
    for d in days:
        for key in accounting:
            assert daily[f"{d}/manifest"][key] == bootstrap[f"{d}/manifest"][key], (d, key)
    for key in daily:
        if not key.startswith(tuple(f"{d}/" for d in days[:-1])) and not key.endswith("/manifest"):
            assert daily[key] == bootstrap[key], key

    # The next day from either: both incremental, identical to each other and to a full recompute.
    for home in (settings.home, boot.home):
        _land(home, 6)
    _daily_matches_full(spark, settings, 6, expect_incremental=True)
    _daily_matches_full(spark, boot, 6, expect_incremental=True)
    _assert_same(_published(settings.home, [day(6)]), _published(boot.home, [day(6)]))


def test_reruns_backfills_and_fallbacks(spark, settings):
    for i in range(5):
        _land(settings.home, i)
    staging, _ = _stage(spark, settings, day(0), day(2))
    publish_run(Layout(settings.home), staging)
    _daily_matches_full(spark, settings, 3, expect_incremental=True)
    before = _published(settings.home, [day(3)])
    _daily_matches_full(spark, settings, 3, expect_incremental=True)  # a rerun: same rows, manifest and state
    _assert_same(_published(settings.home, [day(3)]), before)
    _daily_matches_full(spark, settings, 4, expect_incremental=True)

    # A backfill of an older day with the same inputs reproduces its manifest: the later states stay usable (and
    # serving stays on day 4: the backfill's snapshot is published beside the live one, not made live) ...
    layout = Layout(settings.home)
    live = (layout.online / "CURRENT").read_text()
    backfill = _daily_matches_full(spark, settings, 3, expect_incremental=True)
    assert (layout.online / "CURRENT").read_text() == live
    _assert_same(_outputs(layout.features, layout.online / backfill["snapshot"], [day(3)], state=False),
                 {k: v for k, v in before.items() if not k.startswith("state/")})
    _land(settings.home, 5)
    _daily_matches_full(spark, settings, 5, expect_incremental=True)
    # ... one with other inputs makes the next run fall back to a full one, which still matches. (Day 1 has no
    # state of its own: a range run keeps only its last day's, so that backfill is a full run too.)
    rawdata.write_parquet(settings.home, day(1), [rawdata.event("u5", "i3", "click", 1.0, _iso(day(1), 13))], name="more.parquet")
    staging, run = _stage(spark, settings, day(1), day(1))
    assert not run["mode"]["incremental"] and "no state" in run["mode"]["reason"]
    publish_run(Layout(settings.home), staging)
    run = _daily_matches_full(spark, settings, 5, expect_incremental=False)
    assert "republished" in run["mode"]["reason"]
    # A missing state (deleted, or from a multi-day run's inner day) falls back too.
    shutil.rmtree(Layout(settings.home).features_partition(day(5)) / STATE_DIR)
    _land(settings.home, 6)
    run = _daily_matches_full(spark, settings, 6, expect_incremental=False)
    assert "no state" in run["mode"]["reason"]


def test_windows_slide_past_the_carried_days(spark, settings):
    """Sparse deliveries over 75 days: the 7/14/30-day windows of one incremental range run and of the daily run
    after it lose the carried days exactly as a full recompute does; very late events land outside the window."""
    for i in (0, 1, 2, 3, 20, 44, 61, 70, 75):
        _land(settings.home, i)
    staging, _ = _stage(spark, settings, day(0), day(2))
    publish_run(Layout(settings.home), staging)
    days = [day(i) for i in range(3, 75)]
    full, _ = _stage(spark, settings, days[0], days[-1], incremental=False)
    expected = _staged(full, days)
    shutil.rmtree(full)
    staging, run = _stage(spark, settings, days[0], days[-1])
    assert run["mode"]["incremental"]
    _assert_same(_staged(staging, days), expected)
    publish_run(Layout(settings.home), staging)
    _daily_matches_full(spark, settings, 75, expect_incremental=True)
