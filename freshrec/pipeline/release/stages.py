"""The release stages the `release` DAG wires together (each a plain function of settings + params).

Params (the DAG's, all optional but `version`): steps, interval_s, max_p99_ms, max_error_rate, max_psi,
min_requests, failure_threshold, require_approval, shadow_first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from freshrec.core.errors import ArtifactIntegrityError, GateFailed, InvalidInput, ReleaseRolledBack
from freshrec.core.registry import Registry, State, open_registry
from freshrec.core.settings import Settings
from freshrec.pipeline.export.edge import export_after_promotion
from freshrec.pipeline.monitoring.serving_api import ServingClient
from freshrec.pipeline.release.analysis import CanaryPolicy
from freshrec.pipeline.release.controller import ACTOR, CanaryController, ReleasePlan, parse_steps
from freshrec.pipeline.release.preflight import run_preflight
from freshrec.pipeline.release.progress import ReleaseProgress

log = logging.getLogger(__name__)


def plan_from_params(settings: Settings, params: Mapping[str, Any]) -> ReleasePlan:
    version = str(params.get("version") or "").strip()
    if not version:
        raise InvalidInput("the release needs a `version` (trigger with conf {\"version\": \"<v>\"})")
    r = settings.release
    policy = CanaryPolicy.from_settings(
        settings,
        slo_p99_ms=params.get("max_p99_ms"),
        max_error_rate=params.get("max_error_rate"),
        max_psi=params.get("max_psi"),
        min_requests=params.get("min_requests"),
        failure_threshold=params.get("failure_threshold"),
    )
    steps = params.get("steps")
    return ReleasePlan(
        version=version,
        steps=parse_steps(steps) if steps else tuple(float(s) for s in r.steps),
        interval_s=float(params.get("interval_s") or r.interval_s),
        policy=policy,
        require_approval=bool(params.get("require_approval", r.require_approval)),
        shadow_first=bool(params.get("shadow_first", False)),
        convergence_timeout_s=r.convergence_timeout_s,
    )


@contextmanager
def controller_for(settings: Settings, params: Mapping[str, Any]) -> Iterator[CanaryController]:
    plan = plan_from_params(settings, params)
    registry = open_registry(settings)
    try:
        with ServingClient(settings) as serving:
            yield CanaryController(registry, serving, plan, progress=ReleaseProgress(settings.home, plan.version, plan.steps))
    finally:
        registry.close()


def preflight(settings: Settings, params: Mapping[str, Any]) -> dict[str, Any]:
    """Checksums and offline latency; a failing candidate is rejected with the evidence."""
    plan = plan_from_params(settings, params)
    registry = open_registry(settings)
    try:
        view = registry.get_version(plan.version)
        if view.state not in (State.CANDIDATE, State.CANARY):
            raise InvalidInput(f"version {plan.version} is {view.state}; only a candidate can be released")
        try:
            return run_preflight(settings, registry, plan.version, budget_ms=plan.policy.slo_p99_ms)
        except (GateFailed, ArtifactIntegrityError) as exc:
            evidence = {"stage": "preflight", **exc.details}
            registry.reject(plan.version, [f"preflight: {exc.message}"], evidence, actor=ACTOR)
            registry.record_verdict(plan.version, {"verdict": "rejected", "reasons": [exc.message], **evidence},
                                    actor=ACTOR)
            ReleaseProgress(settings.home, plan.version, plan.steps).finished("rejected", [f"preflight: {exc.message}"])
            raise
    finally:
        registry.close()


def shadow(settings: Settings, params: Mapping[str, Any]) -> dict[str, Any]:
    """Optional mirrored phase: the candidate sees real requests, users see only the champion.

    Returns the analysis, or {} when there is no shadow phase (an empty dict, not None: Airflow stores no
    XCom for None and the canary task's pull would log a spurious "XCom not found" error)."""
    with controller_for(settings, params) as controller:
        if not controller.plan.shadow_first or controller.registry.serving_state().champion is None:
            return {}
        try:
            return controller.run_shadow().to_dict()
        except BaseException as exc:
            controller.abort(exc)
            raise


def canary(settings: Settings, params: Mapping[str, Any], shadow_analysis: dict[str, Any] | None) -> dict[str, Any]:
    """Walk the canary steps; returns the decision ("promote" | "rollback" | "await_approval")."""
    with controller_for(settings, params) as controller:
        if shadow_analysis and shadow_analysis.get("outcome") == "fail":
            return {"decision": "rollback", "reasons": [f"shadow: {r}" for r in shadow_analysis["reasons"]],
                    "analyses": [{**shadow_analysis, "phase": "shadow"}]}
        plan = controller.plan
        try:
            result = controller.run().to_dict()
        except BaseException as exc:
            controller.abort(exc)
            raise
        if shadow_analysis:
            result["analyses"].insert(0, {**shadow_analysis, "phase": "shadow"})
        result["plan"] = {"steps": list(plan.steps), "interval_s": plan.interval_s,
                          "policy": plan.policy.__dict__, "require_approval": plan.require_approval}
        return result


def _evidence(preflight_evidence: dict | None, canary_result: dict, approval: dict | None) -> dict[str, Any]:
    evidence: dict[str, Any] = {"preflight": preflight_evidence, "analyses": canary_result.get("analyses", []),
                                "plan": canary_result.get("plan")}
    if approval:
        evidence["approval"] = {k: approval.get(k) for k in ("chosen_options", "responded_by_user", "responded_at")}
    return evidence


def promote(settings: Settings, params: Mapping[str, Any], preflight_evidence: dict | None, canary_result: dict,
            approval: dict | None = None) -> str:
    reasons = list(canary_result.get("reasons", []))
    if approval:
        reasons.append(f"approved by {approval.get('responded_by_user')}")
    with controller_for(settings, params) as controller:
        controller.promote(reasons, _evidence(preflight_evidence, canary_result, approval))
        export_after_promotion(settings, controller.plan.version)  # edge clients follow the new champion
        return controller.plan.version


def roll_back(settings: Settings, params: Mapping[str, Any], preflight_evidence: dict | None, canary_result: dict,
              approval: dict | None = None) -> str:
    reasons = list(canary_result.get("reasons", [])) or ["canary analysis did not pass"]
    if approval:
        reasons.append(f"rolled back by {approval.get('responded_by_user')}")
    with controller_for(settings, params) as controller:
        controller.roll_back(reasons, _evidence(preflight_evidence, canary_result, approval))
        return controller.plan.version


def check_outcome(settings: Settings, params: Mapping[str, Any]) -> str:
    """Succeeds only when the version ended as champion, so a rolled-back release is a failed run."""
    plan = plan_from_params(settings, params)
    registry: Registry = open_registry(settings)
    try:
        view = registry.get_version(plan.version)
    finally:
        registry.close()
    if view.state != State.CHAMPION:
        raise ReleaseRolledBack(f"version {plan.version} was not promoted: {view.state}; " + "; ".join(view.reasons),
                                details={"state": view.state, "reasons": view.reasons})
    return view.state
