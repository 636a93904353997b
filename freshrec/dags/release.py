"""`release`: canary release of one registered candidate, with automatic rollback."""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Param, TriggerRule, dag, get_current_context, task

from freshrec.core.settings import get_settings
from freshrec.pipeline.release import stages

_SETTINGS = get_settings()
_R = _SETTINGS.release
DEFAULT_ARGS = {"owner": "release", "retries": 0}
# Moving traffic twice is not harmless and a failed preflight has already rejected the candidate, so
# only the finishing stages (idempotent: they check the version's state first) are retried.
SAFE_RETRIES = {"retries": 2, "retry_delay": dt.timedelta(seconds=5)}

DOC = """
### release

Canary release of a registered candidate `version` (triggered by `retrain` with conf
`{"version": "<v>"}`, by `freshrec release run`, or by hand with the form below).

1. **preflight**: artifact checksums against the registry; offline p99 of the ONNX model the serving
   tier would load, with its settings, against the latency budget. A failure rejects the candidate.
2. **shadow** (optional, `shadow_first`): mirrored traffic, users still see the champion.
3. **canary**: for each weight in `steps`, set it in the registry, make every replica reconcile and wait
   until all report the new generation, hold `interval_s`, then compare canary with champion over the
   same window (p99 vs the SLO and the champion, error rate, score PSI, online CTR). Too little traffic
   extends the step once; `failure_threshold` failed analyses roll back.
4. **promote** (champion alias moves; the old champion becomes `previous` and stays loaded) or
   **roll_back** (weight 0, version rejected with reasons and evidence). An inconclusive canary waits for
   a human in **approval** when `require_approval` is set.
5. **outcome** fails the run when the version was not promoted.

The verdict and its evidence are stored on the version: `freshrec registry show <v>`.
"""


class ReleaseApproval(HITLBranchOperator):
    """HITLBranchOperator that also keeps who answered and when, for the verdict's evidence (its own
    return value is only the chosen branch)."""

    def execute_complete(self, context, event):
        responded_at = event.get("responded_at")
        context["ti"].xcom_push(key="response", value={
            "chosen_options": event.get("chosen_options"),
            "responded_by_user": event.get("responded_by_user"),
            "responded_at": responded_at.isoformat() if hasattr(responded_at, "isoformat") else responded_at,
        })
        return super().execute_complete(context, event)


@dag(
    dag_id="release",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # one canary at a time: the registry has one canary alias
    tags=["freshrec", "release"],
    default_args=DEFAULT_ARGS,
    doc_md=DOC,
    params={
        "version": Param("", type=["string", "integer"], description="registry version to release (e.g. \"7\")"),
        "steps": Param([float(s) for s in _R.steps], type="array", items={"type": "number"},
                       description="canary weights in percent, increasing, ending at 100"),
        "interval_s": Param(_R.interval_s, type="number", exclusiveMinimum=0,
                            description="analysis interval: how long each step holds before it is judged"),
        "max_p99_ms": Param(_R.max_p99_ms, type="number", exclusiveMinimum=0,
                            description="p99 latency SLO (ms) for the canary and the offline preflight"),
        "max_error_rate": Param(_R.max_error_rate, type="number", minimum=0, maximum=1,
                                description="largest canary error rate that passes"),
        "max_psi": Param(_R.max_psi, type="number", minimum=0,
                         description="largest score-distribution PSI (canary vs champion) that passes"),
        "min_requests": Param(_R.min_requests_per_step, type="integer", minimum=1,
                              description="canary requests a window needs before any verdict"),
        "failure_threshold": Param(_R.failure_threshold, type="integer", minimum=1,
                                   description="failed analyses before rolling back"),
        "require_approval": Param(_R.require_approval, type="boolean",
                                  description="an inconclusive canary waits for a human instead of rolling back"),
        "shadow_first": Param(False, type="boolean", description="mirror traffic to the candidate before the canary"),
    },
)
def release():
    @task
    def preflight() -> dict:
        """Verify artifact checksums and the offline p99 of the candidate; reject it on failure."""
        return stages.preflight(get_settings(), get_current_context()["params"])

    @task
    def shadow(_preflight: dict) -> dict:
        """Mirror traffic to the candidate (only with `shadow_first`); users keep seeing the champion."""
        return stages.shadow(get_settings(), get_current_context()["params"])

    @task
    def canary(shadow_analysis: dict | None) -> dict:
        """Walk the canary steps, analysing each window; returns promote, rollback or await_approval."""
        return stages.canary(get_settings(), get_current_context()["params"], shadow_analysis)

    @task.branch
    def needs_human(result: dict) -> str:
        """An inconclusive canary with `require_approval` goes to approval; every other one to decide."""
        return "approval" if result["decision"] == "await_approval" else "decide"

    @task.branch
    def decide(result: dict) -> str:
        """Route the analysis decision to promote or roll_back."""
        return "promote" if result["decision"] == "promote" else "roll_back"

    approval = ReleaseApproval(
        task_id="approval",
        subject="Canary of version {{ params.version }} is inconclusive",
        body="The canary got too little traffic for a verdict.\n\n"
             "Reasons: {{ ti.xcom_pull(task_ids='canary')['reasons'] }}\n\n"
             "Promote it to champion, or roll it back (weight 0, rejected).",
        options=["Promote", "Roll back"],
        options_mapping={"Promote": "promote", "Roll back": "roll_back"},
        defaults=["Roll back"],  # what a timeout chooses: the safe side
        response_timeout=dt.timedelta(hours=24),
        doc_md="Human-in-the-loop gate (Airflow UI: Required actions) for an inconclusive canary.",
    )

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, **SAFE_RETRIES)
    def promote(preflight_evidence: dict, result: dict) -> str:
        """Move the champion alias to the candidate (old champion -> previous, still loaded); store the verdict."""
        approval_event = get_current_context()["ti"].xcom_pull(task_ids="approval", key="response")
        return stages.promote(get_settings(), get_current_context()["params"], preflight_evidence, result,
                              approval_event)

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, **SAFE_RETRIES)
    def roll_back(preflight_evidence: dict, result: dict) -> str:
        """Take the canary out of traffic (weight 0) and reject it with reasons and evidence."""
        approval_event = get_current_context()["ti"].xcom_pull(task_ids="approval", key="response")
        return stages.roll_back(get_settings(), get_current_context()["params"], preflight_evidence, result,
                                approval_event)

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def outcome() -> str:
        """Fail the run unless the version ended as champion (so rollbacks are visible as failed runs)."""
        return stages.check_outcome(get_settings(), get_current_context()["params"])

    checked = preflight()
    result = canary(shadow(checked))
    # Two branch levels: a single branch choosing approval would skip promote/roll_back before the
    # human could pick one of them.
    routed, decided = needs_human(result), decide(result)
    routed >> [approval, decided]
    promoted, rolled_back = promote(checked, result), roll_back(checked, result)
    decided >> [promoted, rolled_back]
    approval >> [promoted, rolled_back]
    [promoted, rolled_back] >> outcome()


release()
