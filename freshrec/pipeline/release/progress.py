"""Record a release's progress for people watching it (the serving tier's /canary page).

Best effort by design: the registry is the source of truth and a release never fails because its
progress could not be written (a full disk, a read-only home); such a failure is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from freshrec.core.release_status import (
    CheckStatus,
    ReleaseRecord,
    ReleaseStatus,
    WindowStatus,
    update_release_status,
    utcnow,
)
from freshrec.pipeline.release.analysis import StepAnalysis

log = logging.getLogger(__name__)


class ReleaseProgress:
    """Writes one version's release progress into FRESHREC_HOME's release status file."""

    def __init__(self, home: Path, version: str, steps: tuple[float, ...]) -> None:
        self.home, self.version, self.steps = home, str(version), [float(s) for s in steps]

    def weight(self, weight: float, *, shadow: bool = False) -> None:
        def change(record: ReleaseRecord) -> None:
            record.weight, record.shadow = float(weight), shadow

        self._update(change)

    def window(self, analysis: StepAnalysis, action: str | None, failures: int, *, phase: str = "canary") -> None:
        def change(record: ReleaseRecord) -> None:
            record.windows.append(WindowStatus(
                at=utcnow(), phase=phase, weight=analysis.weight, outcome=str(analysis.outcome), action=action,
                checks=[CheckStatus(name=c.name, outcome=str(c.outcome), value=c.value, threshold=c.threshold,
                                    detail=c.detail) for c in analysis.checks],
                canary_requests=analysis.canary.get("requests"), canary_ctr=analysis.canary.get("ctr"),
                champion_ctr=analysis.champion.get("ctr")))
            record.failures = failures
            record.reasons = analysis.reasons
            if action == "await_approval":
                record.state = "await_approval"

        self._update(change)

    def finished(self, outcome: str, reasons: list[str]) -> None:
        """The release ended (promoted | rolled_back | rejected): it moves to the history."""
        def finish(status: ReleaseStatus) -> None:
            current = status.current
            record = current if current is not None and current.version == self.version else self._new()
            record.state, record.reasons = outcome, list(reasons)
            record.finished_at = record.updated_at = utcnow()
            if outcome != "promoted":
                record.weight = 0.0
            if record is current:
                status.current = None
            status.history = [record, *(r for r in status.history if r.version != self.version)]

        self._write(finish)

    def _new(self) -> ReleaseRecord:
        return ReleaseRecord(version=self.version, steps=self.steps)

    def _update(self, change: Callable[[ReleaseRecord], None]) -> None:
        def apply(status: ReleaseStatus) -> None:
            if status.current is None or status.current.version != self.version:
                if status.current is not None:  # a release that never finished (its task was killed)
                    status.current.state = "interrupted"
                    status.history.insert(0, status.current)
                status.current = self._new()
            change(status.current)
            status.current.updated_at = utcnow()

        self._write(apply)

    def _write(self, change: Callable[[ReleaseStatus], None]) -> None:
        try:
            update_release_status(self.home, change)
        except OSError as exc:
            log.warning("release progress not recorded (the release goes on): %s", exc)
