"""The FRESHREC_HOME layout: every path any plane reads or writes is named here, once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path


def ds_name(day: dt.date) -> str:
    return f"ds={day.isoformat()}"


def parse_ds(name: str) -> dt.date:
    """``ds=YYYY-MM-DD`` -> date."""
    if not name.startswith("ds="):
        raise ValueError(f"not a ds partition: {name}")
    return dt.date.fromisoformat(name[3:])


@dataclass(frozen=True)
class Layout:
    """Paths under FRESHREC_HOME.

    lake/raw/events/ds=D/        landed raw events (CSV, JSONL or Parquet files), as delivered
    lake/clean/events/ds=D/      cleaned events attributed to their *event* day (Parquet)
    lake/quarantine/ds=D/        invalid rows of the batch landed on D, with the reason
    lake/features/ds=D/          feature tables as of the end of D + _manifest.json
    lake/online/                 online snapshots for serving; CURRENT names the live one
    lake/landing/events/         sealed segments of the ingestion log (/v1/events), JSON lines
    lake/landing/events/_open/   segments still being written (one per serving process, flock held)
    lake/landing/_archive/       segments the stream job has landed in the raw lake
    lake/landing/_checkpoint/    the stream job's Structured Streaming checkpoint
    lake/raw/events/_stream/     one manifest per stream batch: where it landed, per-writer log positions
    online_store.sqlite          the embedded online store (live tails) when no Redis URL is configured
    lake/raw/events/_meta/       item and user metadata (genres, demographics) when imported
    models/                      one folder per trained run (ONNX, vocab, model card, reports)
    reports/                     evaluation and benchmark reports (JSON + PNG), GX Data Docs
    reports/release_status.json  the release controller's progress (canary weight, checks, verdict so far)
    airflow/                     the local Airflow home (SQLite, logs)
    logs/, run/                  local stack logs and PID files
    registry.db                  default SQLite registry
    """

    home: Path

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def raw_events(self) -> Path:
        return self.lake / "raw" / "events"

    @property
    def clean_events(self) -> Path:
        return self.lake / "clean" / "events"

    @property
    def quarantine(self) -> Path:
        return self.lake / "quarantine"

    @property
    def features(self) -> Path:
        return self.lake / "features"

    @property
    def online(self) -> Path:
        return self.lake / "online"

    @property
    def landing(self) -> Path:
        return self.lake / "landing" / "events"

    @property
    def landing_open(self) -> Path:
        return self.landing / "_open"

    @property
    def landing_archive(self) -> Path:
        return self.lake / "landing" / "_archive"

    @property
    def stream_checkpoint(self) -> Path:
        return self.lake / "landing" / "_checkpoint"

    @property
    def stream_batches(self) -> Path:
        return self.raw_events / "_stream"

    @property
    def online_store(self) -> Path:
        return self.home / "online_store.sqlite"

    @property
    def meta(self) -> Path:
        # Metadata travels with the events it describes, so an import into any folder keeps it.
        return self.raw_events / "_meta"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def release_status(self) -> Path:
        return self.reports / "release_status.json"

    @property
    def data_docs(self) -> Path:
        return self.reports / "data_docs"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def run(self) -> Path:
        return self.home / "run"

    def raw_partition(self, day: dt.date) -> Path:
        return self.raw_events / ds_name(day)

    def features_partition(self, day: dt.date) -> Path:
        return self.features / ds_name(day)

    def manifest(self, day: dt.date) -> Path:
        return self.features_partition(day) / "_manifest.json"

    def raw_days(self) -> list[dt.date]:
        """Days that have a landed raw partition, sorted."""
        return _days_under(self.raw_events)

    def feature_days(self) -> list[dt.date]:
        """Days with a *published* features partition (manifest present), sorted."""
        return [d for d in _days_under(self.features) if self.manifest(d).is_file()]


def _days_under(root: Path) -> list[dt.date]:
    if not root.is_dir():
        return []
    days = []
    for child in root.iterdir():
        if child.is_dir() and child.name.startswith("ds="):
            try:
                days.append(parse_ds(child.name))
            except ValueError:
                continue
    return sorted(days)
