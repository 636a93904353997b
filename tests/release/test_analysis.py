"""Canary analysis on hand-built windows, and the controller's decisions."""

from __future__ import annotations

import math

import pytest

from freshrec.pipeline.monitoring.promtext import Histogram, VariantCounters
from freshrec.pipeline.release.analysis import Action, CanaryPolicy, Outcome, Progress, analyse_window, decide

INF = math.inf
BOUNDS = [0.001, 0.005, 0.01, 0.025, 0.05, INF]
SCORE_BOUNDS = [0.25, 0.5, 0.75, INF]


def _arm(latency_cumulative, errors=0.0, scores=(25, 25, 25, 25), clicks=0.0) -> VariantCounters:
    # Every request here is a recommendation, so impressions = requests.
    cum, acc = [], 0.0
    for s in scores:
        acc += s
        cum.append(acc)
    return VariantCounters(latency=Histogram(BOUNDS, list(latency_cumulative)), errors=errors,
                           scores=Histogram(SCORE_BOUNDS, cum), clicks=clicks,
                           impressions=float(latency_cumulative[-1]))


HEALTHY_CHAMPION = _arm([0, 5000, 5000, 5000, 5000, 5000], scores=(1000, 1000, 1000, 1000))
POLICY = CanaryPolicy(min_requests=200)


def _check(analysis, name):
    return next(c for c in analysis.checks if c.name == name)


def test_slow_canary_fails_on_p99():
    # 300 canary requests, all between 25 and 50 ms: p99 = 25 + 25 * 297/300 ms
    slow = _arm([0, 0, 0, 0, 300, 300])
    analysis = analyse_window(slow, HEALTHY_CHAMPION, POLICY, weight=5)
    latency = _check(analysis, "p99_latency")
    assert latency.value == pytest.approx(49.75)
    assert latency.outcome is Outcome.FAIL
    # The champion's p99 is 1 + 4 * 0.99 = 4.96 ms, so the champion limit is max(1.5x, +2 ms) = 7.44 ms.
    assert latency.threshold == pytest.approx(7.44)
    assert analysis.outcome is Outcome.FAIL
    assert any("p99_latency" in r for r in analysis.reasons)


def test_erroring_canary_fails_on_error_rate():
    analysis = analyse_window(_arm([0, 400, 400, 400, 400, 400], errors=20), HEALTHY_CHAMPION, POLICY, weight=5)
    errors = _check(analysis, "error_rate")
    assert errors.value == pytest.approx(0.05)
    assert errors.outcome is Outcome.FAIL
    assert analysis.outcome is Outcome.FAIL


def test_healthy_canary_passes():
    analysis = analyse_window(_arm([0, 400, 400, 400, 400, 400], scores=(26, 24, 25, 25)), HEALTHY_CHAMPION,
                              POLICY, weight=25)
    assert analysis.outcome is Outcome.PASS, analysis.reasons
    assert _check(analysis, "score_psi").outcome is Outcome.SKIPPED  # advisory by default
    assert "none" in _check(analysis, "score_psi").detail
    assert _check(analysis, "online_ctr").outcome is Outcome.SKIPPED  # no feedback at all


def test_low_traffic_gives_no_verdict_even_when_it_looks_bad():
    # 20 slow, half-failing requests are noise: no verdict.
    analysis = analyse_window(_arm([0, 0, 0, 0, 20, 20], errors=10), HEALTHY_CHAMPION, POLICY, weight=5)
    assert analysis.outcome is Outcome.INCONCLUSIVE
    assert _check(analysis, "min_sample").outcome is Outcome.INCONCLUSIVE
    assert analysis.to_dict()["outcome"] == "inconclusive"


def test_score_shift_fails_on_psi_only_when_psi_blocks():
    shifted = _arm([0, 400, 400, 400, 400, 400], scores=(5, 5, 10, 380))
    psi = _check(analyse_window(shifted, HEALTHY_CHAMPION, CanaryPolicy(min_requests=200, psi_blocks=True),
                                weight=5), "score_psi")
    assert psi.outcome is Outcome.FAIL
    assert psi.value > 0.25
    # By default a retrained model's score scale may move: recorded as evidence, not a verdict.
    advisory = analyse_window(shifted, HEALTHY_CHAMPION, POLICY, weight=5)
    assert _check(advisory, "score_psi").outcome is Outcome.SKIPPED
    assert "significant" in _check(advisory, "score_psi").detail
    assert advisory.outcome is Outcome.PASS


def test_without_champion_traffic_only_the_slo_counts():
    # At 100% the champion serves nothing: latency is judged against the SLO alone, PSI is skipped.
    empty = VariantCounters()
    ok = analyse_window(_arm([0, 300, 300, 300, 300, 300]), empty, POLICY, weight=100)
    assert ok.outcome is Outcome.PASS
    assert _check(ok, "p99_latency").threshold == POLICY.slo_p99_ms
    assert _check(ok, "score_psi").outcome is Outcome.SKIPPED


def test_ctr_needs_lehr_sample_size_then_tests():
    # CTR 10% vs 4%: with 400 per arm (needed: 16 p(1-p)/0.02^2 ~ 1,600) it is not judged ...
    few = analyse_window(_arm([0, 400] + [400] * 4, clicks=16), _arm([0, 400] + [400] * 4, clicks=40),
                         POLICY, weight=50)
    assert _check(few, "online_ctr").outcome is Outcome.SKIPPED
    # ... with 4,000 per arm the drop is significant.
    many = analyse_window(_arm([0, 4000] + [4000] * 4, clicks=160), _arm([0, 4000] + [4000] * 4, clicks=400),
                          POLICY, weight=50)
    ctr = _check(many, "online_ctr")
    assert ctr.outcome is Outcome.FAIL
    assert ctr.value == pytest.approx(0.04)
    # A better canary passes.
    better = analyse_window(_arm([0, 4000] + [4000] * 4, clicks=480), _arm([0, 4000] + [4000] * 4, clicks=400),
                            POLICY, weight=50)
    assert _check(better, "online_ctr").outcome is Outcome.PASS


def test_failure_threshold_counts_like_flagger():
    policy = CanaryPolicy(failure_threshold=2)
    action, progress = decide(Outcome.FAIL, Progress(), policy, last_step=False, require_approval=False)
    assert action is Action.RETRY and progress.failures == 1
    action, progress = decide(Outcome.PASS, progress, policy, last_step=False, require_approval=False)
    assert action is Action.ADVANCE and progress.failures == 1  # failures count over the release
    action, progress = decide(Outcome.FAIL, progress, policy, last_step=False, require_approval=False)
    assert action is Action.ROLLBACK and progress.failures == 2


def test_inconclusive_extends_once_then_rolls_back_or_waits_for_a_human():
    policy = CanaryPolicy(max_extensions=1)
    action, progress = decide(Outcome.INCONCLUSIVE, Progress(), policy, last_step=False, require_approval=False)
    assert action is Action.EXTEND and progress.extensions == 1
    action, _ = decide(Outcome.INCONCLUSIVE, progress, policy, last_step=False, require_approval=False)
    assert action is Action.ROLLBACK
    action, _ = decide(Outcome.INCONCLUSIVE, progress, policy, last_step=False, require_approval=True)
    assert action is Action.AWAIT_APPROVAL


def test_last_passing_step_promotes():
    action, progress = decide(Outcome.PASS, Progress(extensions=1), POLICY, last_step=True, require_approval=False)
    assert action is Action.PROMOTE and progress.extensions == 0


def test_a_breach_the_champion_shares_is_not_the_canarys_fault():
    # Both arms between 10 and 25 ms (a loaded host): above the 10 ms SLO, but not worse than the champion.
    loaded_champion = _arm([0, 0, 0, 5000, 5000, 5000], scores=(1000, 1000, 1000, 1000))
    similar = _arm([0, 0, 0, 300, 300, 300])
    analysis = analyse_window(similar, loaded_champion, POLICY, weight=50)
    assert _check(analysis, "p99_latency").outcome is Outcome.PASS
    # A canary that is clearly slower than an equally loaded champion still fails.
    slower = _arm([0, 0, 0, 0, 300, 300])
    assert _check(analyse_window(slower, loaded_champion, POLICY, weight=50), "p99_latency").outcome is Outcome.FAIL


def test_at_full_weight_an_earlier_champion_p99_is_the_reference():
    canary = _arm([0, 0, 0, 300, 300, 300])  # p99 = 10 + 15 * 297/300 = 24.85 ms
    alone = analyse_window(canary, VariantCounters(), POLICY, weight=100)
    assert _check(alone, "p99_latency").outcome is Outcome.FAIL
    referenced = analyse_window(canary, VariantCounters(), POLICY, weight=100, champion_reference_ms=22.0)
    check = _check(referenced, "p99_latency")
    assert check.outcome is Outcome.PASS and check.threshold == pytest.approx(33.0)
