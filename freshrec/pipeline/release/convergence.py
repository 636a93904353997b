"""Confirm from the serving tier that every worker serves what a release step intends.

The registry says what *should* serve; only the workers can say what *does*. After a canary step, a
promotion or a rollback the controller asks every replica to reconcile, then reads each replica's
GET /v1/models until it shows the step's state: the answering worker serves the intended champion and canary
at the intended weight, and every worker behind the port reports the step's registry generation. A worker
claims a generation only once the champion and canary it serves are that generation's
(``freshrec.serving.reconciler.applied_generation``), so a worker that could not load the version stays
behind and is named, with what it serves, when the step fails.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from freshrec.core.errors import StageFailed
from freshrec.core.registry import ServingState
from freshrec.pipeline.monitoring.serving_api import ServingClient, ServingUnavailable, reported_generation

TRAFFIC_ROLES = ("champion", "canary")


class NotServedEverywhere(StageFailed):
    """A release step's state did not reach every serving worker in time; details name each gap."""


@dataclass(frozen=True)
class IntendedServing:
    """What every worker must serve once a release step is applied: the registry's state after the step."""

    generation: int
    champion: str | None
    canary: str | None
    canary_weight: float
    shadow: bool

    @classmethod
    def from_state(cls, state: ServingState) -> IntendedServing:
        canary = str(state.canary.version) if state.canary is not None else None
        return cls(
            generation=int(state.generation),
            champion=str(state.champion.version) if state.champion is not None else None,
            canary=canary,
            canary_weight=float(state.canary_weight) if canary is not None else 0.0,
            shadow=bool(state.shadow) if canary is not None else False,
        )

    def describe(self) -> str:
        canary = f", canary {self.canary} at {self.canary_weight:g}%{' (shadow)' if self.shadow else ''}" if self.canary else ""
        return f"registry generation {self.generation}: champion {self.champion}{canary}"


def _role_gaps(models: dict[str, Any], intended: IntendedServing) -> list[str]:
    """The answering worker's champion, canary, weight and shadow flag against the intended ones."""
    roles = {str(v.get("role")): str(v.get("version")) for v in models.get("versions") or []}
    gaps = [f"serves {role} {roles.get(role, 'none')}, not {getattr(intended, role) or 'none'}"
            for role in TRAFFIC_ROLES if roles.get(role) != getattr(intended, role)]
    if intended.canary is not None and not gaps:
        weight = float(models.get("canary_weight") or 0.0)
        if not math.isclose(weight, intended.canary_weight, abs_tol=1e-9):
            gaps.append(f"sends {weight:g}% to the canary, not {intended.canary_weight:g}%")
        if bool(models.get("shadow")) != intended.shadow:
            gaps.append(f"shadow is {bool(models.get('shadow'))}, not {intended.shadow}")
    return gaps


def _worker_gaps(models: dict[str, Any], generation: int) -> list[str]:
    """Workers behind the port (each reports the generation it applied) that are short of ``generation``."""
    workers = models.get("workers")
    if not workers:  # a single worker: the answer is all of it
        own = reported_generation(models)
        return [] if own >= generation else [f"serves registry generation {own}, not {generation}"]
    return [f"worker pid {w.get('pid')} serves registry generation {w.get('generation')}, not {generation}"
            for w in workers if int(w.get("generation", -1)) < generation]


def _refusals(models: dict[str, Any], intended: IntendedServing) -> list[str]:
    """Why the answering worker refused an intended version (it says so in /v1/models)."""
    wanted = {v for v in (intended.champion, intended.canary) if v is not None}
    return [f"refused version {r.get('version')}: {r.get('reason')}" for r in models.get("refused") or []
            if str(r.get("version")) in wanted]


def served_gaps(models: dict[str, Any], intended: IntendedServing) -> list[str]:
    """How one replica's GET /v1/models answer falls short of the intended state (empty: it serves it)."""
    gaps = _worker_gaps(models, intended.generation) + _role_gaps(models, intended)
    return gaps + _refusals(models, intended) if gaps else []


def _replica_gaps(serving: ServingClient, replica: str, intended: IntendedServing) -> list[str]:
    try:
        return served_gaps(serving.models(replica), intended)
    except ServingUnavailable as exc:  # a worker restarting answers again before the deadline, or is named
        return [exc.message]


def confirm_served(serving: ServingClient, intended: IntendedServing, timeout_s: float, *, poll_s: float = 0.2,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Return once every worker of every replica serves ``intended``; raise NotServedEverywhere naming each
    replica, worker and version that still differs after ``timeout_s``."""
    serving.reconcile_all()
    deadline = clock() + timeout_s
    while True:
        gaps = {replica: _replica_gaps(serving, replica, intended) for replica in serving.replicas}
        gaps = {replica: found for replica, found in gaps.items() if found}
        if not gaps:
            return
        if clock() >= deadline:
            listed = "; ".join(f"{replica}: {', '.join(found)}" for replica, found in gaps.items())
            raise NotServedEverywhere(f"not every serving worker serves {intended.describe()} after {timeout_s:g} s: "
                                      f"{listed}", details={"intended": intended.__dict__, "replicas": gaps})
        sleep(poll_s)
