"""The features suite over a *staged* run: accounting identity and quarantine share per day, keys,
ranges, events counted by the feature tables vs clean events, and drift vs the previous day (KL divergence
of the event-type mix).

It reads the staging directory the Spark job wrote; nothing is published unless this passes. The event-type
mix of a day is what the users table counts for it (the sum of ``n_<type>_1d`` over users): every known event
of that event day, whichever day it landed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import great_expectations as gx
import pandas as pd
import pyarrow.dataset as ds

from freshrec.core.errors import DataValidationError
from freshrec.core.layout import Layout
from freshrec.core.schemas import EVENT_TYPES
from freshrec.core.settings import Settings
from freshrec.pipeline.validation.gx_runner import SuiteOutcome, run_suite

MIN_ROWS_FOR_DRIFT = 200  # smaller days are too noisy for a distribution comparison
KL_EPSILON = 1e-4


def load_manifests(staging: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((staging / "features").glob("ds=*/_manifest.json"))]


def read_table(root: Path, table: str, days: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    """One feature table across days (``ds`` added), from ``root/ds=D/<table>/`` folders."""
    frames = []
    for day in days:
        folder = root / f"ds={day}" / table
        if folder.is_dir() and any(folder.rglob("*.parquet")):
            frame = ds.dataset(str(folder), format="parquet").to_table(columns=columns).to_pandas()
            frame["ds"] = day
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*(columns or []), "ds"])


DAY_COUNTS = [f"n_{t}_1d" for t in EVENT_TYPES]  # per user and day: that day's events of each type


def event_mix(users: pd.DataFrame) -> pd.DataFrame:
    """Per day (index ``ds``): events of each type (columns ``EVENT_TYPES``), from the users table's 1-day counts."""
    if users.empty:
        return pd.DataFrame(columns=list(EVENT_TYPES), dtype="int64")
    mix = users.groupby("ds")[DAY_COUNTS].sum()
    return mix.rename(columns=dict(zip(DAY_COUNTS, EVENT_TYPES))).astype("int64")


def accounting_frame(manifests: list[dict], mix: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per day: the accounting identity, the quarantine share, and the events the feature tables counted for the
    day (``counted_events``) against the clean events staged for it: every valid event must be counted."""
    counted = mix.sum(axis=1) if mix is not None else pd.Series(dtype="int64")
    rows = []
    for m in manifests:
        accounted = m["valid_rows"] + m["quarantined_rows"] + m["duplicate_rows"]
        share = m["quarantined_rows"] / m["input_rows"] if m["input_rows"] else 0.0
        rows.append({"ds": m["ds"], "input_rows": m["input_rows"], "accounted_rows": accounted, "quarantine_share": share,
                     "counted_events": int(counted.get(m["ds"], 0)), "clean_events": m["outputs"]["clean_events"]})
    return pd.DataFrame(rows)


def kl_divergence(p: dict[str, float], q: dict[str, float]) -> float:
    """KL(p || q) over the union of categories, both smoothed so an unseen category stays finite."""
    keys = sorted(set(p) | set(q))
    ps = [p.get(k, 0.0) + KL_EPSILON for k in keys]
    qs = [q.get(k, 0.0) + KL_EPSILON for k in keys]
    sp, sq = sum(ps), sum(qs)
    return sum((a / sp) * math.log((a / sp) / (b / sq)) for a, b in zip(ps, qs))


def _day_mix(mix: pd.DataFrame, day: str) -> tuple[int, dict[str, float] | None]:
    """A day's event count, and its type mix when there are enough events for a comparison."""
    counts = {t: float(n) for t, n in mix.loc[day].items() if n} if day in mix.index else {}
    rows = int(sum(counts.values()))
    return rows, counts if rows >= MIN_ROWS_FOR_DRIFT else None


def drift_frame(mix: pd.DataFrame, previous_mix: dict[str, float] | None, days: list[str]) -> pd.DataFrame:
    """Per day: KL divergence of its event-type mix vs the previous day's (None when either is too small)."""
    rows = []
    prev = previous_mix
    for day in days:
        n, today = _day_mix(mix, day)
        kl = kl_divergence(today, prev) if today and prev else None
        rows.append({"ds": day, "rows": n, "kl_event_type": kl})
        prev = today or prev
    return pd.DataFrame(rows, columns=["ds", "rows", "kl_event_type"]).astype({"kl_event_type": float})


def previous_day_mix(layout: Layout, first: dt.date) -> dict[str, float] | None:
    """Event-type mix of the published day before the run (the drift baseline of its first day)."""
    before = (first - dt.timedelta(days=1)).isoformat()
    return _day_mix(event_mix(read_table(layout.features, "users", [before], ["user_id", *DAY_COUNTS])), before)[1]


def _expectations(settings: Settings) -> dict[str, list]:
    d, e = settings.data, gx.expectations
    counts = [f"n_{t}_{w}" for t in EVENT_TYPES for w in ("1d", "7d", "30d", "all")]
    return {
        "features_accounting": [
            e.ExpectColumnPairValuesToBeEqual(column_A="input_rows", column_B="accounted_rows"),
            e.ExpectColumnValuesToBeBetween(column="quarantine_share", min_value=0, max_value=d.quarantine_max_share),
            e.ExpectColumnPairValuesAToBeGreaterThanB(column_A="counted_events", column_B="clean_events", or_equal=True),
        ],
        "features_users": [
            e.ExpectColumnValuesToNotBeNull(column="user_id"),
            e.ExpectCompoundColumnsToBeUnique(column_list=["ds", "user_id"]),
            e.ExpectColumnValuesToBeBetween(column="n_events", min_value=1),
            *[e.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in counts],
            e.ExpectColumnValuesToBeBetween(column="mean_rating", min_value=d.rating_min, max_value=d.rating_max),
            e.ExpectColumnValuesToBeBetween(column="recency_days", min_value=0),
        ],
        "features_items": [
            e.ExpectColumnValuesToNotBeNull(column="item_id"),
            e.ExpectCompoundColumnsToBeUnique(column_list=["ds", "item_id"]),
            e.ExpectColumnPairValuesAToBeGreaterThanB(column_A="pop_all", column_B="pop_30d", or_equal=True),
            e.ExpectColumnPairValuesAToBeGreaterThanB(column_A="pop_30d", column_B="pop_7d", or_equal=True),
            e.ExpectColumnValuesToBeBetween(column="pop_all", min_value=1),
            e.ExpectColumnValuesToBeBetween(column="age_days", min_value=0),
            e.ExpectColumnValuesToBeBetween(column="trend_7d", min_value=0, strict_min=True),
            e.ExpectColumnValuesToBeBetween(column="mean_rating", min_value=d.rating_min, max_value=d.rating_max),
        ],
        "features_drift": [e.ExpectColumnValuesToBeBetween(column="kl_event_type", min_value=0, max_value=d.drift_max_kl)],
    }


def validate_staged(settings: Settings, staging: Path) -> dict:
    """Run every features suite over a staged run; raise DataValidationError when one fails."""
    layout = Layout(settings.home)
    manifests = load_manifests(staging)
    if not manifests:
        raise DataValidationError(f"staging {staging} holds no manifests: the Spark job did not finish")
    days = [m["ds"] for m in manifests]
    root = staging / "features"
    users = read_table(root, "users", days)
    mix = event_mix(users)
    frames = {
        "features_accounting": accounting_frame(manifests, mix),
        "features_users": users,
        "features_items": read_table(root, "items", days),
        "features_drift": drift_frame(mix, previous_day_mix(layout, dt.date.fromisoformat(days[0])), days),
    }
    outcomes: list[SuiteOutcome] = []
    for name, expectations in _expectations(settings).items():
        frame = frames[name]
        if name != "features_accounting" and frame.empty:
            continue  # nothing to check (e.g. no events at all in the range); accounting always runs
        outcomes.append(run_suite(settings, name, frame, expectations))
    report = {"days": [days[0], days[-1]], "staging": str(staging),
              "quarantine": {m["ds"]: {"rows": m["quarantined_rows"], "reasons": m["quarantine_reasons"]}
                             for m in manifests if m["quarantined_rows"]},
              "suites": {o.suite: {"success": o.success, "evaluated": o.evaluated, "failures": o.failures} for o in outcomes},
              "data_docs": str(layout.data_docs / "index.html")}
    failed = [o for o in outcomes if not o.success]
    if failed:
        reasons = " | ".join(f"{o.suite}: {o.describe_failures()}" for o in failed)
        raise DataValidationError(f"features {days[0]}..{days[-1]} failed validation, nothing published: {reasons}; "
                                  f"Data Docs: {layout.data_docs / 'index.html'}", details=report)
    return report
