"""Canary analysis: canary against champion over the same window, and the step decision.

Pure functions over counter windows (freshrec.pipeline.monitoring.promtext). Rules, after Flagger and Argo Rollouts:
- minimum sample: a canary with fewer than ``min_requests`` requests in the window gets no verdict
  (Inconclusive); the controller extends the step, then pauses for a human or rolls back;
- checks: p99 latency against the SLO and against the champion, error rate, score-distribution PSI
  against the champion, online CTR (two-proportion test, only with Lehr's sample size per arm);
- failure threshold: failed analyses are counted over the release; reaching the threshold rolls back,
  a failure below it repeats the step with a fresh window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from freshrec.core.settings import Settings
from freshrec.pipeline.monitoring.promtext import VariantCounters
from freshrec.pipeline.monitoring.stats import histogram_quantile, psi, psi_level, required_per_arm, two_proportion_test


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"


class Action(StrEnum):
    ADVANCE = "advance"          # next weight
    PROMOTE = "promote"          # last step passed
    RETRY = "retry"              # failed below the threshold: same weight, fresh window
    EXTEND = "extend"            # too little traffic: hold longer, keep the window growing
    AWAIT_APPROVAL = "await_approval"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class CanaryPolicy:
    slo_p99_ms: float = 10.0
    max_p99_ratio: float = 1.5        # canary p99 may be at most this times the champion's ...
    p99_slack_ms: float = 2.0         # ... or this much above it, whichever is larger (bucket resolution)
    max_error_rate: float = 0.01
    max_psi: float = 0.25
    psi_blocks: bool = False          # a retrained model's raw scores need not share the champion's scale
    min_requests: int = 200
    ctr_min_delta: float = 0.02       # smallest absolute CTR change worth detecting
    ctr_alpha: float = 0.05
    failure_threshold: int = 1
    max_extensions: int = 1

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CanaryPolicy:
        r = settings.release
        policy = cls(
            slo_p99_ms=r.max_p99_ms,
            max_p99_ratio=r.max_p99_ratio_vs_champion,
            p99_slack_ms=r.p99_slack_ms,
            max_error_rate=r.max_error_rate,
            max_psi=r.max_psi,
            psi_blocks=r.psi_blocks,
            min_requests=r.min_requests_per_step,
            ctr_min_delta=r.ctr_min_delta,
            failure_threshold=r.failure_threshold,
            max_extensions=r.max_extensions,
        )
        return replace(policy, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    value: float | None
    threshold: float | None
    detail: str


@dataclass
class StepAnalysis:
    weight: float
    outcome: Outcome
    checks: list[Check]
    canary: dict[str, Any] = field(default_factory=dict)
    champion: dict[str, Any] = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if c.outcome in (Outcome.FAIL, Outcome.INCONCLUSIVE)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "outcome": str(self.outcome),
            "reasons": self.reasons,
            "checks": [{**asdict(c), "outcome": str(c.outcome)} for c in self.checks],
            "canary": self.canary,
            "champion": self.champion,
        }


def summarize(counters: VariantCounters) -> dict[str, Any]:
    """The figures of one arm that go into the evidence."""
    requests = counters.requests
    p99 = histogram_quantile(0.99, counters.latency) if counters.latency else None
    p50 = histogram_quantile(0.5, counters.latency) if counters.latency else None
    return {
        "requests": requests,
        "errors": counters.errors,
        "error_rate": counters.errors / requests if requests else None,
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
        "clicks": counters.clicks,
        "impressions": counters.impressions,
        "ctr": counters.clicks / counters.impressions if counters.impressions else None,
        "score_buckets": counters.scores.bucket_counts() if counters.scores else None,
    }


def analyse_window(canary: VariantCounters, champion: VariantCounters, policy: CanaryPolicy,
                   weight: float, champion_reference_ms: float | None = None) -> StepAnalysis:
    """Judge one window. Latency histograms are in seconds; thresholds in ms. `champion_reference_ms`
    is the champion p99 of an earlier window, used when this one has too little champion traffic
    (at 100% the champion serves nothing)."""
    c_sum, b_sum = summarize(canary), summarize(champion)
    champion_enough = champion.requests >= policy.min_requests
    checks = [
        _sample_check(canary, policy),
        _latency_check(c_sum, b_sum, champion_enough, policy, champion_reference_ms),
        _error_check(c_sum, policy),
        _psi_check(canary, champion, champion_enough, policy),
        _ctr_check(canary, champion, policy),
    ]
    if checks[0].outcome is Outcome.INCONCLUSIVE:
        outcome = Outcome.INCONCLUSIVE  # never a verdict on noise, whatever the other checks say
    elif any(c.outcome is Outcome.FAIL for c in checks):
        outcome = Outcome.FAIL
    else:
        outcome = Outcome.PASS
    return StepAnalysis(weight=weight, outcome=outcome, checks=checks, canary=c_sum, champion=b_sum)


def _sample_check(canary: VariantCounters, policy: CanaryPolicy) -> Check:
    n = canary.requests
    if n < policy.min_requests:
        return Check("min_sample", Outcome.INCONCLUSIVE, n, policy.min_requests,
                     f"{n:.0f} canary requests in the window, {policy.min_requests} needed for a verdict")
    return Check("min_sample", Outcome.PASS, n, policy.min_requests, f"{n:.0f} canary requests")


def _latency_check(c: dict, b: dict, champion_enough: bool, policy: CanaryPolicy,
                   champion_reference_ms: float | None) -> Check:
    """The SLO is the budget; the champion excuses a breach it shares (a loaded host, not the canary).

    Fails when the canary's p99 is above the SLO and either there is no champion reference or the
    canary is also clearly slower than the champion (max(ratio x, + slack), for bucket resolution).
    """
    p99 = c["p99_ms"]
    if p99 is None:
        return Check("p99_latency", Outcome.SKIPPED, None, policy.slo_p99_ms, "no latency observations")
    reference = b["p99_ms"] if champion_enough and b["p99_ms"] is not None else champion_reference_ms
    if p99 <= policy.slo_p99_ms:
        return Check("p99_latency", Outcome.PASS, p99, policy.slo_p99_ms,
                     f"canary p99 {p99:.2f} ms within the {policy.slo_p99_ms:.2f} ms SLO")
    if reference is None:
        return Check("p99_latency", Outcome.FAIL, p99, policy.slo_p99_ms,
                     f"canary p99 {p99:.2f} ms > {policy.slo_p99_ms:.2f} ms SLO")
    bound = max(reference * policy.max_p99_ratio, reference + policy.p99_slack_ms)
    if p99 > bound:
        return Check("p99_latency", Outcome.FAIL, p99, bound,
                     f"canary p99 {p99:.2f} ms > {policy.slo_p99_ms:.2f} ms SLO and > {bound:.2f} ms "
                     f"(champion p99 {reference:.2f} ms)")
    return Check("p99_latency", Outcome.PASS, p99, bound,
                 f"canary p99 {p99:.2f} ms above the SLO but so is the champion ({reference:.2f} ms); "
                 f"within {bound:.2f} ms")


def _error_check(c: dict, policy: CanaryPolicy) -> Check:
    rate = c["error_rate"]
    if rate is None:
        return Check("error_rate", Outcome.SKIPPED, None, policy.max_error_rate, "no requests")
    ok = rate <= policy.max_error_rate
    return Check("error_rate", Outcome.PASS if ok else Outcome.FAIL, rate, policy.max_error_rate,
                 f"canary error rate {rate:.4f} {'<=' if ok else '>'} {policy.max_error_rate}")


def _psi_check(canary: VariantCounters, champion: VariantCounters, champion_enough: bool,
               policy: CanaryPolicy) -> Check:
    if not (champion_enough and canary.scores and champion.scores and canary.scores.count and champion.scores.count):
        return Check("score_psi", Outcome.SKIPPED, None, policy.max_psi, "no champion score distribution in the window")
    if canary.scores.bounds != champion.scores.bounds:
        return Check("score_psi", Outcome.SKIPPED, None, policy.max_psi, "score histograms use different buckets")
    value = psi(champion.scores.bucket_counts(), canary.scores.bucket_counts())
    detail = f"score PSI {value:.3f} ({psi_level(value)} shift)"
    if not policy.psi_blocks:
        return Check("score_psi", Outcome.SKIPPED, value, policy.max_psi, f"advisory: {detail}")
    ok = value <= policy.max_psi
    return Check("score_psi", Outcome.PASS if ok else Outcome.FAIL, value, policy.max_psi, detail)


def _ctr_check(canary: VariantCounters, champion: VariantCounters, policy: CanaryPolicy) -> Check:
    n_c, n_b = canary.impressions, champion.impressions
    if n_c <= 0 or n_b <= 0 or canary.clicks + champion.clicks <= 0:
        return Check("online_ctr", Outcome.SKIPPED, None, None, "no feedback in the window")
    pooled = (canary.clicks + champion.clicks) / (n_c + n_b)
    needed = required_per_arm(min(max(pooled, 1e-6), 1 - 1e-6), policy.ctr_min_delta)
    if min(n_c, n_b) < needed:
        return Check("online_ctr", Outcome.SKIPPED, None, needed,
                     f"{min(n_c, n_b):.0f} impressions per arm, {needed:.0f} needed to detect ±{policy.ctr_min_delta}")
    test = two_proportion_test(champion.clicks, n_b, canary.clicks, n_c)
    worse = test.z < 0 and test.p_value < policy.ctr_alpha
    detail = (f"CTR canary {test.p_treatment:.4f} vs champion {test.p_control:.4f}, z={test.z:.2f}, "
              f"p={test.p_value:.3g}")
    return Check("online_ctr", Outcome.FAIL if worse else Outcome.PASS, test.p_treatment, test.p_control, detail)


@dataclass(frozen=True)
class Progress:
    """What the controller carries from one analysis to the next."""

    failures: int = 0     # over the whole release (Flagger's failedChecks)
    extensions: int = 0   # in the current step


def decide(outcome: Outcome, progress: Progress, policy: CanaryPolicy, *, last_step: bool,
           require_approval: bool) -> tuple[Action, Progress]:
    """Next controller action after an analysis."""
    if outcome is Outcome.FAIL:
        failures = progress.failures + 1
        action = Action.ROLLBACK if failures >= policy.failure_threshold else Action.RETRY
        return action, Progress(failures=failures, extensions=0)
    if outcome is Outcome.INCONCLUSIVE:
        if progress.extensions < policy.max_extensions:
            return Action.EXTEND, replace(progress, extensions=progress.extensions + 1)
        return (Action.AWAIT_APPROVAL if require_approval else Action.ROLLBACK), progress
    return (Action.PROMOTE if last_step else Action.ADVANCE), replace(progress, extensions=0)


def analyse_shadow(shadow: VariantCounters, champion: VariantCounters, policy: CanaryPolicy) -> StepAnalysis:
    """A shadow phase only yields scores (mirrored requests are never answered, so they have no latency
    or errors of their own). It passes when the candidate scored enough mirrored requests. The score
    PSI against the champion is recorded but advisory: the serving tier observes a mirrored request's
    top scores before seen-item filtering and cold-start fallbacks, the champion's served lists after
    them, so even an identical model shows a shift."""
    observed = shadow.scores.count if shadow.scores else 0.0
    if observed < policy.min_requests:
        sample = Check("min_sample", Outcome.INCONCLUSIVE, observed, policy.min_requests,
                       f"{observed:.0f} shadow scores in the window, {policy.min_requests} needed")
    else:
        sample = Check("min_sample", Outcome.PASS, observed, policy.min_requests, f"{observed:.0f} shadow scores")
    drift = _psi_check(shadow, champion, True, replace(policy, psi_blocks=False))
    advisory = Check("score_psi", Outcome.SKIPPED, drift.value, drift.threshold, drift.detail)
    outcome = Outcome.INCONCLUSIVE if sample.outcome is Outcome.INCONCLUSIVE else Outcome.PASS
    return StepAnalysis(weight=0.0, outcome=outcome, checks=[sample, advisory], canary=summarize(shadow),
                        champion=summarize(champion))
