"""The features suite over a *staged* run: accounting identity and quarantine share per day, keys,
ranges, row counts vs input, and drift vs the previous day (KL divergence of the event-type mix).

It reads the staging directory the Spark job wrote; nothing is published unless this passes.
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


def accounting_frame(manifests: list[dict]) -> pd.DataFrame:
    rows = []
    for m in manifests:
        accounted = m["valid_rows"] + m["quarantined_rows"] + m["duplicate_rows"]
        share = m["quarantined_rows"] / m["input_rows"] if m["input_rows"] else 0.0
        rows.append({"ds": m["ds"], "input_rows": m["input_rows"], "accounted_rows": accounted, "quarantine_share": share,
                     "positives": None, "clean_events": m["outputs"]["clean_events"]})
    return pd.DataFrame(rows)


def kl_divergence(p: dict[str, float], q: dict[str, float]) -> float:
    """KL(p || q) over the union of categories, both smoothed so an unseen category stays finite."""
    keys = sorted(set(p) | set(q))
    ps = [p.get(k, 0.0) + KL_EPSILON for k in keys]
    qs = [q.get(k, 0.0) + KL_EPSILON for k in keys]
    sp, sq = sum(ps), sum(qs)
    return sum((a / sp) * math.log((a / sp) / (b / sq)) for a, b in zip(ps, qs))


def drift_frame(positives: pd.DataFrame, previous_mix: dict[str, float] | None, days: list[str]) -> pd.DataFrame:
    """Per day: KL divergence of its event-type mix vs the previous day's (None when either is too small)."""
    rows = []
    prev = previous_mix
    for day in days:
        today = positives[positives["ds"] == day]
        mix = today["event_type"].value_counts().to_dict() if len(today) >= MIN_ROWS_FOR_DRIFT else None
        kl = kl_divergence(mix, prev) if mix and prev else None
        rows.append({"ds": day, "rows": len(today), "kl_event_type": kl})
        prev = mix or prev
    return pd.DataFrame(rows, columns=["ds", "rows", "kl_event_type"]).astype({"kl_event_type": float})


def previous_day_mix(layout: Layout, first: dt.date) -> dict[str, float] | None:
    """Event-type mix of the published day before the run (the drift baseline of its first day)."""
    before = first - dt.timedelta(days=1)
    frame = read_table(layout.features, "training_examples", [before.isoformat()], ["label", "event_type"])
    frame = frame[frame["label"] == 1]
    return frame["event_type"].value_counts().to_dict() if len(frame) >= MIN_ROWS_FOR_DRIFT else None


def _expectations(settings: Settings) -> dict[str, list]:
    d, e = settings.data, gx.expectations
    counts = [f"n_{t}_{w}" for t in EVENT_TYPES for w in ("1d", "7d", "30d", "all")]
    return {
        "features_accounting": [
            e.ExpectColumnPairValuesToBeEqual(column_A="input_rows", column_B="accounted_rows"),
            e.ExpectColumnValuesToBeBetween(column="quarantine_share", min_value=0, max_value=d.quarantine_max_share),
            e.ExpectColumnPairValuesAToBeGreaterThanB(column_A="positives", column_B="clean_events", or_equal=True),
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
        "features_examples": [
            e.ExpectColumnValuesToNotBeNull(column="user_id"),
            e.ExpectColumnValuesToNotBeNull(column="item_id"),
            e.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
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
    examples = read_table(root, "training_examples", days, ["user_id", "item_id", "label", "event_type"])
    positives = examples[examples["label"] == 1]
    accounting = accounting_frame(manifests)
    accounting["positives"] = accounting["ds"].map(positives.groupby("ds").size()).fillna(0).astype(int)
    frames = {
        "features_accounting": accounting,
        "features_users": read_table(root, "users", days),
        "features_items": read_table(root, "items", days),
        "features_examples": examples,
        "features_drift": drift_frame(positives, previous_day_mix(layout, dt.date.fromisoformat(days[0])), days),
    }
    outcomes: list[SuiteOutcome] = []
    for name, expectations in _expectations(settings).items():
        frame = frames[name]
        if name != "features_accounting" and frame.empty:
            continue  # nothing to check (e.g. no events at all in the range); accounting always runs
        outcomes.append(run_suite(settings, name, frame, expectations))
    report = {"days": [days[0], days[-1]], "staging": str(staging),
              "quarantine": {m["ds"]: {"rows": m["quarantined_rows"], "reasons": m["quarantine_reasons"]} for m in manifests if m["quarantined_rows"]},
              "suites": {o.suite: {"success": o.success, "evaluated": o.evaluated, "failures": o.failures} for o in outcomes},
              "data_docs": str(layout.data_docs / "index.html")}
    failed = [o for o in outcomes if not o.success]
    if failed:
        reasons = " | ".join(f"{o.suite}: {o.describe_failures()}" for o in failed)
        raise DataValidationError(f"features {days[0]}..{days[-1]} failed validation, nothing published: {reasons}; "
                                  f"Data Docs: {layout.data_docs / 'index.html'}", details=report)
    return report
