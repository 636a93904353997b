"""The raw-batch suite: schema, null rates, ranges, event-type set and volume vs the trailing average.

Row-level problems are tolerated up to ``settings.data.quarantine_max_share`` (the clean job quarantines
them one by one); beyond it, or on a volume anomaly, the batch is rejected before Spark even runs.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import great_expectations as gx
import pandas as pd

from freshrec.core.errors import DataValidationError
from freshrec.core.layout import Layout
from freshrec.core.schemas import EVENT_TYPES, RAW_COLUMNS
from freshrec.core.settings import Settings
from freshrec.pipeline.validation.gx_runner import SuiteOutcome, run_suite
from freshrec.pipeline.validation.raw_batch import load_raw_batch

NUMBER = r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$"
TIMESTAMP = r"^\s*(?:-?\d+(?:\.\d+)?|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?)\s*$"
TRAILING_DAYS = 7
MIN_TRAILING_DAYS = 3  # fewer known days than this: no meaningful average, the volume check is skipped


def prepare_raw_frame(batch: pd.DataFrame) -> pd.DataFrame:
    """Empty strings count as missing; numeric helper columns for the range expectations."""
    frame = batch.copy()
    for column in RAW_COLUMNS:
        frame[column] = frame[column].map(lambda v: None if v is None or (isinstance(v, str) and not v.strip()) else v)
    frame["value_number"] = pd.to_numeric(frame["value"], errors="coerce")
    is_rating = frame["event_type"].astype(str).str.strip().str.lower() == "rating"
    frame["rating_value"] = frame["value_number"].where(is_rating)
    return frame


def raw_expectations(settings: Settings) -> list[gx.expectations.Expectation]:
    d = settings.data
    mostly = 1.0 - d.quarantine_max_share
    e = gx.expectations
    checks: list[gx.expectations.Expectation] = [e.ExpectTableRowCountToBeBetween(min_value=1)]
    checks += [e.ExpectColumnToExist(column=c) for c in RAW_COLUMNS]
    checks += [e.ExpectColumnValuesToNotBeNull(column=c, mostly=mostly) for c in RAW_COLUMNS]
    checks += [
        e.ExpectColumnValuesToBeInSet(column="malformed", value_set=[False], mostly=mostly),
        e.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES), mostly=mostly),
        e.ExpectColumnValuesToMatchRegex(column="value", regex=NUMBER, mostly=mostly),
        e.ExpectColumnValuesToMatchRegex(column="ts", regex=TIMESTAMP, mostly=mostly),
        e.ExpectColumnValuesToBeBetween(column="value_number", min_value=0, mostly=mostly),
        e.ExpectColumnValuesToBeBetween(column="rating_value", min_value=d.rating_min, max_value=d.rating_max, mostly=mostly),
    ]
    return checks


def published_volumes(layout: Layout) -> dict[str, int]:
    """input_rows of every published day (from its manifest)."""
    volumes = {}
    for day in layout.feature_days():
        manifest = json.loads(layout.manifest(day).read_text())
        volumes[day.isoformat()] = int(manifest.get("input_rows", 0))
    return volumes


def volume_frame(batch_counts: dict[str, int], known: dict[str, int], days: list[dt.date]) -> pd.DataFrame:
    """Per batch day: rows and the ratio to the mean of the previous TRAILING_DAYS *published* days.

    Only published history is the baseline: the check guards the daily feed against a broken delivery.
    A bootstrap of historical data (no published days yet) has no baseline and is not volume-checked;
    its natural burstiness (ML-100K has 9% of days outside 0.2x..5x of their trailing week) is not an error.
    """
    volumes = known
    rows = []
    for day in days:
        window = [(day - dt.timedelta(days=i)).isoformat() for i in range(1, TRAILING_DAYS + 1)]
        previous = [volumes[w] for w in window if volumes.get(w, 0) > 0]
        n = batch_counts.get(day.isoformat(), 0)
        average = sum(previous) / len(previous) if len(previous) >= MIN_TRAILING_DAYS else None
        rows.append({"ds": day.isoformat(), "rows": n, "trailing_average": average,
                     "ratio": (n / average) if average and n else None})
    return pd.DataFrame(rows, columns=["ds", "rows", "trailing_average", "ratio"]).astype({"ratio": float, "trailing_average": float})


def volume_expectations(settings: Settings) -> list:
    d = settings.data
    return [gx.expectations.ExpectColumnValuesToBeBetween(column="ratio", min_value=d.volume_ratio_min, max_value=d.volume_ratio_max)]


def validate_raw(settings: Settings, days: list[dt.date]) -> dict:
    """Run the raw suites over the landed files of ``days``; raise DataValidationError when they fail."""
    layout = Layout(settings.home)
    batch = load_raw_batch(layout.raw_events, days)
    frame = prepare_raw_frame(batch)
    counts = {k: int(v) for k, v in batch.groupby("landed").size().items()}
    outcomes: list[SuiteOutcome] = []
    if len(frame):
        outcomes.append(run_suite(settings, "raw_events", frame, raw_expectations(settings)))
    volumes = volume_frame(counts, published_volumes(layout), days)
    outcomes.append(run_suite(settings, "raw_volume", volumes, volume_expectations(settings)))
    report = _report(outcomes, rows=len(frame), days=days)
    if not len(frame):
        raise DataValidationError(f"no raw events landed for {days[0]}..{days[-1]} under {layout.raw_events}", details=report)
    failed = [o for o in outcomes if not o.success]
    if failed:
        reasons = " | ".join(f"{o.suite}: {o.describe_failures()}" for o in failed)
        raise DataValidationError(f"raw batch {days[0]}..{days[-1]} failed validation: {reasons}; "
                                  f"Data Docs: {layout.data_docs / 'index.html'}", details=report)
    return report


def _report(outcomes: list[SuiteOutcome], rows: int, days: list[dt.date]) -> dict:
    docs = next((o.docs_index for o in outcomes if o.docs_index), None)
    return {"days": [days[0].isoformat(), days[-1].isoformat()], "rows": rows,
            "suites": {o.suite: {"success": o.success, "evaluated": o.evaluated, "failures": o.failures} for o in outcomes},
            "data_docs": str(docs) if docs else None}


def write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
