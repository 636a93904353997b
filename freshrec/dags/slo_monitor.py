"""`slo_monitor`: burn-rate alerts, freshness and drift every 5 minutes; rolls back a burning canary
and triggers `retrain` when the model is stale or drifted."""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

DEFAULT_ARGS = {"owner": "sre"}
# Collecting twice only adds a snapshot and evaluating twice only adds a status row: safe to retry.
SAFE_RETRIES = {"retries": 2, "retry_delay": dt.timedelta(seconds=10)}

DOC = """
### slo_monitor

Every 5 minutes (and on demand):

1. **collect**: scrape every replica's `/metrics` (or query Prometheus when
   `FRESHREC_MONITORING__PROMETHEUS_URL` is set) and store counter snapshots in the registry database.
2. **evaluate**: SRE-workbook multiwindow burn rates for the availability and latency SLOs (page 14.4x
   over 1 h and 5 min, 6x over 6 h and 30 min; ticket 1x over 3 d and 6 h); the canary's own page-level
   burn; model age and the newest features partition's age; champion score PSI against its reference.
   The status is recorded (`slo_status_history`).
3. **act**: alerts through the notifier (log, plus `FRESHREC_MONITORING__WEBHOOK_URL`); a canary that
   burns its budget is rolled back (rejected, weight 0).
4. **retrain** when the model is stale or drifted (at most one triggered run per hour).
"""


def _settings():
    from freshrec.core.settings import get_settings

    return get_settings()


@dag(
    dag_id="slo_monitor",
    schedule=dt.timedelta(minutes=5),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["freshrec", "monitoring"],
    default_args=DEFAULT_ARGS,
    doc_md=DOC,
    params={
        "act": Param(True, type="boolean",
                     description="roll back a burning canary and trigger retrain (off: only record and alert)"),
    },
)
def slo_monitor():
    @task(**SAFE_RETRIES)
    def collect() -> int:
        """Scrape the serving counters and store one snapshot per replica and variant."""
        from freshrec.pipeline.monitoring import store
        from freshrec.pipeline.monitoring.monitor import collect as collect_snapshots

        settings = _settings()
        return collect_snapshots(settings, store.open_store(settings))

    @task(**SAFE_RETRIES)
    def evaluate(_collected: int) -> dict:
        """Burn rates, freshness and drift over the stored snapshots; the status is recorded."""
        from freshrec.core.registry import open_registry
        from freshrec.pipeline.monitoring import store
        from freshrec.pipeline.monitoring.monitor import check

        settings = _settings()
        with open_registry(settings) as registry:
            evaluation = check(settings, store.open_store(settings), registry)
        return evaluation.to_dict()

    @task
    def act(status: dict) -> list[str]:
        """Send the alerts; roll back an active canary whose own burn rate pages."""
        from freshrec.core.registry import open_registry
        from freshrec.pipeline.monitoring import store
        from freshrec.pipeline.monitoring.monitor import act as act_on
        from freshrec.pipeline.monitoring.monitor import check
        from freshrec.pipeline.monitoring.notify import Alert, build_notifier

        settings = _settings()
        notifier = build_notifier(settings.monitoring.webhook_url)
        if not get_current_context()["params"]["act"]:
            for alert in status["alerts"]:
                notifier.notify(Alert(**alert))
            return [f"alert {a['severity']}: {a['summary']}" for a in status["alerts"]]
        with open_registry(settings) as registry:
            # Re-evaluate from the stored snapshots rather than trusting a stale XCom for a rollback.
            evaluation = check(settings, store.open_store(settings), registry, record=False)
            return act_on(settings, evaluation, registry, notifier)

    @task.short_circuit
    def needs_retrain(status: dict) -> bool:
        """Continue to trigger `retrain` only when the model is stale or drifted (and acting is on)."""
        return bool(status["retrain_reasons"]) and bool(get_current_context()["params"]["act"])

    retrain = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="retrain",
        # One triggered retrain per hour at most, however often the monitor sees a stale model.
        trigger_run_id="slo_monitor__{{ macros.time.strftime('%Y%m%dT%H', macros.time.gmtime()) }}",
        skip_when_already_exists=True,
        conf={"reason": "{{ ti.xcom_pull(task_ids='evaluate')['retrain_reasons'] | join('; ') }}"},
        wait_for_completion=False,
        doc_md="Starts `retrain` (stale or drifted model) as a manual run: it retrains even on the same data.",
    )

    status = evaluate(collect())
    act(status)
    needs_retrain(status) >> retrain


slo_monitor()
