"""The release controller's progress, as a small JSON file the serving tier's /canary page reads.

The registry holds the outcome of a release (aliases, weight, verdicts); what the controller knows only
while it runs (the checks of every analysis window, the verdict so far) is written here, after every
weight change and analysis, by whichever process runs the release (a DAG task, `freshrec pipeline run`).
Writers take a lock and replace the file atomically, so readers never see half of it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from freshrec.core.layout import Layout

log = logging.getLogger(__name__)
HISTORY = 10        # finished releases kept
WINDOWS = 50        # analysis windows kept per release


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Model(BaseModel):
    # A file written by another version of FreshRec still reads: unknown fields are ignored.
    model_config = ConfigDict(extra="ignore")


class CheckStatus(_Model):
    name: str
    outcome: str                      # pass | fail | inconclusive | skipped
    value: float | None = None
    threshold: float | None = None
    detail: str = ""


class WindowStatus(_Model):
    """One analysis window: its weight, outcome, the controller's action and each check."""

    at: dt.datetime
    phase: str = "canary"             # canary | shadow
    weight: float
    outcome: str
    action: str | None = None         # advance | promote | retry | extend | await_approval | rollback
    checks: list[CheckStatus] = Field(default_factory=list)
    canary_requests: float | None = None
    canary_ctr: float | None = None
    champion_ctr: float | None = None


class ReleaseRecord(_Model):
    version: str
    state: str = "running"            # running | await_approval | promoted | rolled_back | rejected
    started_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    finished_at: dt.datetime | None = None
    steps: list[float] = Field(default_factory=list)
    weight: float = 0.0
    shadow: bool = False
    failures: int = 0
    reasons: list[str] = Field(default_factory=list)
    windows: list[WindowStatus] = Field(default_factory=list)

    @property
    def verdict_so_far(self) -> str:
        """The last window's outcome while running ("pending" before the first), the outcome once finished."""
        if self.state != "running":
            return self.state
        return self.windows[-1].outcome if self.windows else "pending"


class ReleaseStatus(_Model):
    current: ReleaseRecord | None = None
    history: list[ReleaseRecord] = Field(default_factory=list)   # newest first


def read_release_status(home: Path) -> ReleaseStatus:
    """The recorded progress; empty when no release ever ran here (or the file is unreadable)."""
    path = Layout(home).release_status
    try:
        return ReleaseStatus.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return ReleaseStatus()
    except (OSError, ValidationError, ValueError) as exc:
        log.warning("ignoring an unreadable release status file: %s", type(exc).__name__)
        return ReleaseStatus()


def update_release_status(home: Path, change: Callable[[ReleaseStatus], None]) -> ReleaseStatus:
    """Read, change and write the file under an exclusive lock (release tasks may run in several processes)."""
    path = Layout(home).release_status
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            status = read_release_status(home)
            change(status)
            if status.current is not None:
                status.current.windows = status.current.windows[-WINDOWS:]
            status.history = status.history[:HISTORY]
            partial = path.with_name(f".{path.name}.tmp")
            partial.write_text(json.dumps(status.model_dump(mode="json"), indent=1))
            partial.replace(path)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lock, fcntl.LOCK_UN)
    return status
