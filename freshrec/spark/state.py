"""The carried state of a features run: what a daily run needs from all earlier days, written next to the last
day's published partition (``features/ds=D/_state/``, published atomically with it, kept out of the manifest).

state(D) covers every event landed on or before D with an event day on or before D, exactly the events a full
run ending on D sees for that day. The next run [D+1, ...] adds the events it did not cover (the new landings,
plus the rare ones landed by D with a later event day) instead of reading all history. It is used only when it
was written by the same code and settings and every published manifest up to D is
unchanged since (a rerun of an older day with the same inputs reproduces its manifest and keeps the later states
usable; one with other inputs makes them fall back to a full run). Otherwise the run is a full one, as before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from freshrec.core.layout import Layout, parse_ds
from freshrec.core.settings import Settings
from freshrec.spark import staging as st
from freshrec.spark.feature_tables import Carried

STATE_DIR = "_state"
META_FILE = "_state.json"
FORMAT = 3  # 2: no category counts (the snapshot lost its category affinity); 3: no user history, 30 item days
TABLES = ("users", "user_days", "items", "item_days", "touch")


@dataclass(frozen=True)
class State:
    users: Carried
    items: Carried
    touch: DataFrame  # see online_snapshot.touches


def state_key(settings: Settings) -> dict:
    """What a usable state must have been written with (the features use no item metadata since they dropped the
    items' category, so its digest is no longer part of the key)."""
    return {"format": FORMAT, "code_version": st.code_version(), "online_history_length": settings.data.online_history_length}


def published_manifests(layout: Layout, upto: dt.date) -> dict[str, dict]:
    """Every published manifest of a day on or before ``upto`` (a few hundred small files for a long history)."""
    manifests = {}
    for path in layout.features.glob("ds=*/_manifest.json"):
        day = parse_ds(path.parent.name)
        if day <= upto:
            manifests[day.isoformat()] = json.loads(path.read_text())
    return manifests


def lake_digest(manifests: dict[str, dict]) -> str:
    return hashlib.sha256(json.dumps(sorted(manifests.items()), sort_keys=True).encode()).hexdigest()


def load_state(spark: SparkSession, layout: Layout, first: dt.date, key: dict) -> tuple[State | None, str]:
    """The state of the day before ``first`` when it is usable, else None and why not."""
    before = first - dt.timedelta(days=1)
    folder = layout.features_partition(before) / STATE_DIR
    if not (folder / META_FILE).is_file():
        return None, f"no state for {before}"
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("as_of") != before.isoformat() or {k: meta.get(k) for k in key} != key:
        return None, f"the state of {before} was written by other code, settings or item metadata"
    if meta.get("lake") != lake_digest(published_manifests(layout, before)):
        return None, f"a day up to {before} was republished with other outputs since its state was written"
    if not all(any((folder / t).glob("*.parquet")) for t in TABLES):
        return None, f"the state of {before} is incomplete"
    read = {t: spark.read.parquet(str(folder / t)) for t in TABLES}
    state = State(Carried(read["users"], read["user_days"]), Carried(read["items"], read["item_days"]), read["touch"])
    return state, f"state of {before}"


def write_state(folder: Path, users: Carried, items: Carried, touch: DataFrame) -> None:
    frames = {"users": users.totals, "user_days": users.days, "items": items.totals, "item_days": items.days,
              "touch": touch}
    for table, frame in frames.items():
        frame.write.mode("overwrite").parquet(str(folder / table))


def write_state_meta(folder: Path, key: dict, as_of: dt.date, manifests: dict[str, dict]) -> None:
    """Last, once every manifest of the run is staged: the digest covers them and the published earlier ones."""
    st.write_json(folder / META_FILE, {**key, "as_of": as_of.isoformat(), "lake": lake_digest(manifests)})
