"""The canary controller: move traffic step by step, analyse every step, and finish the release.

Weights go to the registry (the source of truth, audited); every replica is then told to reconcile and
the controller waits until every worker of every replica serves the new state (``convergence``) before it
opens an analysis window, so a window never mixes two weights. A step, a promotion or a rollback that does
not reach every worker in time fails. Windows are the difference of two scrapes of every replica.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from freshrec.core.errors import FreshRecError, InvalidInput
from freshrec.core.registry import Registry, State
from freshrec.pipeline.monitoring.promtext import Scrape, window
from freshrec.pipeline.monitoring.serving_api import ServingClient
from freshrec.pipeline.release.analysis import (
    Action,
    CanaryPolicy,
    Outcome,
    Progress,
    StepAnalysis,
    analyse_shadow,
    analyse_window,
    decide,
)
from freshrec.pipeline.release.convergence import IntendedServing, confirm_served
from freshrec.pipeline.release.progress import ReleaseProgress

log = logging.getLogger(__name__)
ACTOR = "release"


@dataclass(frozen=True)
class ReleasePlan:
    version: str
    steps: tuple[float, ...]
    interval_s: float
    policy: CanaryPolicy
    require_approval: bool = False
    shadow_first: bool = False
    convergence_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < s <= 100 for s in self.steps) or list(self.steps) != sorted(self.steps):
            raise InvalidInput(f"steps must be increasing weights in (0, 100], got {list(self.steps)}")
        if self.steps[-1] != 100:
            raise InvalidInput(f"the last step must send 100% of traffic to the canary, got {self.steps[-1]}")
        if self.interval_s <= 0:
            raise InvalidInput(f"interval must be positive, got {self.interval_s}")


def parse_steps(text: str | Sequence[float]) -> tuple[float, ...]:
    """'5,25,50,100' or a list -> weights."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        return tuple(float(s) for s in items if str(s).strip())
    except ValueError as exc:
        raise InvalidInput(f"steps must be numbers separated by commas, got {text!r}") from exc


@dataclass
class CanaryResult:
    decision: str                      # "promote" | "rollback" | "await_approval"
    reasons: list[str]
    analyses: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": self.reasons, "analyses": self.analyses}


class CanaryController:
    def __init__(self, registry: Registry, serving: ServingClient, plan: ReleasePlan, *,
                 sleep: Callable[[float], None] = time.sleep, progress: ReleaseProgress | None = None) -> None:
        self.registry, self.serving, self.plan, self.sleep = registry, serving, plan, sleep
        self.progress = progress  # where people watching the release see it (None: nowhere)
        self._champion_p99_ms: float | None = None  # the latest champion p99 with enough traffic

    # --- traffic -------------------------------------------------------------------------------
    def converge(self) -> None:
        """Return once every serving worker serves the registry's current state (raises otherwise)."""
        intended = IntendedServing.from_state(self.registry.serving_state())
        confirm_served(self.serving, intended, self.plan.convergence_timeout_s)

    def apply_weight(self, weight: float, *, shadow: bool = False) -> None:
        state = self.registry.serving_state()
        version = self.plan.version
        reason = f"canary step {weight:g}%" + (" (shadow)" if shadow else "")
        if state.canary is None:
            self.registry.start_canary(version, weight, actor=ACTOR, reason=reason, shadow=shadow)
        elif str(state.canary.version) != str(version):
            raise InvalidInput(f"version {state.canary.version} is already the canary; finish its release first")
        else:
            self.registry.set_canary_weight(weight, actor=ACTOR, reason=reason, shadow=shadow)
        self.converge()
        if self.progress is not None:
            self.progress.weight(weight, shadow=shadow)
        log.info("version %s serves %g%% of traffic%s", version, weight, " (shadow)" if shadow else "")

    # --- analysis ------------------------------------------------------------------------------
    def analyse(self, baseline: dict[str, Scrape], weight: float) -> StepAnalysis:
        self.sleep(self.plan.interval_s)
        after = self.serving.scrape_all()
        analysis = analyse_window(window(baseline, after, "canary"), window(baseline, after, "champion"),
                                  self.plan.policy, weight, self._champion_p99_ms)
        self._remember_champion(analysis)
        return analysis

    def _remember_champion(self, analysis: StepAnalysis) -> None:
        if analysis.champion["requests"] >= self.plan.policy.min_requests and analysis.champion["p99_ms"]:
            self._champion_p99_ms = analysis.champion["p99_ms"]

    def run_shadow(self) -> StepAnalysis:
        """Mirror the first step's share of traffic to the candidate without serving its answers; only
        its scores can be judged."""
        self.apply_weight(self.plan.steps[0], shadow=True)
        baseline = self.serving.scrape_all()
        self.sleep(self.plan.interval_s)
        after = self.serving.scrape_all()
        analysis = analyse_shadow(window(baseline, after, "shadow"), window(baseline, after, "champion"),
                                  self.plan.policy)
        self._remember_champion(analysis)
        if self.progress is not None:
            self.progress.window(analysis, None, 0, phase="shadow")
        return analysis

    def run(self) -> CanaryResult:
        """Walk the steps; the caller finishes with promote() or roll_back()."""
        if self.registry.serving_state().champion is None:
            return CanaryResult("promote", ["no champion yet: the first version is promoted after preflight"])
        analyses: list[dict[str, Any]] = []
        if self.plan.shadow_first:
            shadow = self.run_shadow()
            analyses.append({**shadow.to_dict(), "phase": "shadow"})
            if shadow.outcome is Outcome.FAIL:
                return CanaryResult("rollback", shadow.reasons, analyses)
        progress, index, applied = Progress(), 0, None
        steps = self.plan.steps
        while True:
            weight = steps[index]
            if weight != applied:
                self.apply_weight(weight)
                applied = weight
            baseline = self.serving.scrape_all()
            while True:
                analysis = self.analyse(baseline, weight)
                action, progress = decide(analysis.outcome, progress, self.plan.policy,
                                          last_step=index == len(steps) - 1,
                                          require_approval=self.plan.require_approval)
                analyses.append({**analysis.to_dict(), "action": str(action)})
                if self.progress is not None:
                    self.progress.window(analysis, str(action), progress.failures)
                log.info("step %g%%: %s -> %s %s", weight, analysis.outcome, action, analysis.reasons)
                if action is not Action.EXTEND:
                    break  # an extension keeps the same baseline, so the window keeps growing
            if action is Action.ADVANCE:
                index += 1
            elif action is Action.PROMOTE:
                return CanaryResult("promote", [f"healthy through every step {list(steps)}"], analyses)
            elif action is Action.ROLLBACK:
                return CanaryResult("rollback", analysis.reasons or ["analysis failed"], analyses)
            elif action is Action.AWAIT_APPROVAL:
                return CanaryResult("await_approval", analysis.reasons, analyses)
            # RETRY: same weight, fresh window

    # --- finishing -----------------------------------------------------------------------------
    def _record_outcome(self, verdict: str, reasons: list[str], evidence: dict[str, Any]) -> None:
        """Record the verdict with whether every worker confirmed it, then fail unless they all did: the
        registry already holds the outcome, but the step is not done while a worker serves something else."""
        failure: FreshRecError | None = None
        try:
            self.converge()
        except FreshRecError as exc:  # not served everywhere, or a replica that does not answer
            failure = exc
        self.registry.record_verdict(self.plan.version, {
            "verdict": verdict, "reasons": reasons, "replicas_converged": failure is None,
            **({"not_served": failure.details.get("replicas", failure.message)} if failure else {}), **evidence},
            actor=ACTOR)
        if self.progress is not None:
            self.progress.finished(verdict, reasons)
        if failure is not None:
            raise failure

    def promote(self, reasons: list[str], evidence: dict[str, Any]) -> None:
        version = self.plan.version
        if self.registry.get_version(version).state != State.CHAMPION:
            self.registry.promote(version, actor=ACTOR, reason="; ".join(reasons))
        self._record_outcome("promoted", reasons, evidence)

    def roll_back(self, reasons: list[str], evidence: dict[str, Any]) -> None:
        version = self.plan.version
        if self.registry.get_version(version).state != State.REJECTED:
            # reject() moves the canary to weight 0 and records why, in one audited transaction.
            self.registry.reject(version, reasons, evidence, actor=ACTOR)
        self._record_outcome("rolled_back", reasons, evidence)

    def abort(self, error: BaseException) -> None:
        """Something broke mid-release: take the canary out of traffic before the caller re-raises ``error``
        (a rollback that does not reach every worker is logged here, not raised over the original error)."""
        message = error.message if isinstance(error, FreshRecError) else repr(error)
        state = self.registry.serving_state()
        if state.canary is not None and str(state.canary.version) == str(self.plan.version):
            try:
                self.roll_back([f"release aborted: {message}"], {"error": message})
            except FreshRecError as exc:
                log.error("the aborted canary %s is rejected in the registry, but: %s", self.plan.version, exc.message)
