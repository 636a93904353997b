"""`features_daily`: raw events of a day (or a range) -> validated features in the lake.

The DAG only wires; the work lives in freshrec.pipeline.features, freshrec.pipeline.validation and freshrec.spark
(landing_stream, features).
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import CronDataIntervalTimetable, Param, PokeReturnValue, dag, get_current_context, task

from freshrec.dags.assets import FEATURES

log = logging.getLogger(__name__)

DOC = """
### features_daily

Turns landed raw events into published features, one day per scheduled run, or a whole range in one
Spark job when triggered with `from_ds`/`to_ds` (bootstrap, `freshrec pipeline run --stages features`).

1. **land_stream**: lands the ingestion log (`POST /v1/events`) into the raw lake first, so a day fed only by
   the API has its raw partition when the sensor looks (`spark_jobs/landing_stream.py` with availableNow; no
   Spark start when the log holds no segments, nothing to do when a continuous landing job holds the checkpoint).
2. **plan**: the days (run conf, else the run's logical date) and a private staging directory.
3. **wait_for_raw**: sensor on `lake/raw/events/ds=<day>/` (scheduled runs only; skipped for a conf range).
4. **validate_raw**: Great Expectations on the landed files (schema, null rates, ranges, event types,
   volume vs the trailing average). A bad batch stops the run here.
5. **spark_features**: `spark_jobs/features.py` through the Spark provider (connection `spark_default`;
   local `local[*]` by default, a cluster is a connection change): clean + quarantine with reasons,
   point-in-time features, online snapshot, manifests, all into the staging dir.
6. **validate_features**: accounting identity, quarantine share <= `data.quarantine_max_share`, keys,
   ranges, row counts vs input, drift vs the previous day. Failing -> nothing is published.
7. **publish**: atomic swap of every partition and of the online snapshot (made live only when it is not older
   than the live one); emits the `freshrec://features` Asset, which schedules `retrain`.

Backfills (`airflow backfill create --dag-id features_daily --from-date A --to-date B`) give one
partition per day; reprocessing a day replaces it (no duplicates). Data Docs: `$FRESHREC_HOME/reports/data_docs`.

**Which day a run covers**: its *logical date* (= data interval start) D. Its run id
(`scheduled__<D+1>T00:00:00+00:00`, `backfill__...` alike) and "Run After" name the moment it may start, midnight
after D, when the day is complete: Airflow names runs after that moment, not after their data interval.
The `plan` task's log says the days it processes.
"""

DEFAULT_ARGS = {
    "owner": "data",
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=10),
    "execution_timeout": dt.timedelta(minutes=30),
}


def _settings():
    from freshrec.core.settings import get_settings

    return get_settings()


@dag(
    dag_id="features_daily",
    # A data-interval schedule: the run for day D has logical date D and starts once D is over, and
    # `airflow backfill create --from-date A --to-date B` processes exactly the days A..B. (Airflow 3's
    # plain "@daily" is a trigger timetable whose midnight run would be dated, and process, the new day.)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,  # spark env_vars travel as a dict through XCom
    default_args=DEFAULT_ARGS,
    tags=["freshrec", "data", "spark", "features"],
    doc_md=DOC,
    params={
        "from_ds": Param(None, type=["null", "string"], format="date",
                         description="first day to process (YYYY-MM-DD); empty = the run's logical date"),
        "to_ds": Param(None, type=["null", "string"], format="date",
                       description="last day to process, inclusive (YYYY-MM-DD); empty = from_ds"),
    },
)
def features_daily():
    @task(doc_md="Land the ingestion log's sealed segments into the raw lake (Structured Streaming, availableNow).",
          execution_timeout=dt.timedelta(minutes=20))
    def land_stream() -> dict:
        from freshrec.pipeline.features.runs import land_stream as land

        summary = land(_settings())
        log.info("landing: %s", summary)
        return summary

    @task(doc_md="Resolve the days (conf range or logical date) and the run's staging directory.", retries=0)
    def plan() -> dict:
        from freshrec.pipeline.features.runs import plan_run, submission

        ctx = get_current_context()
        run = ctx["dag_run"]
        logical = ctx.get("logical_date") or run.run_after
        # A @daily run for logical date D starts once D is over: D is the day to process.
        scheduled_day = logical.date() if ctx.get("logical_date") else (logical - dt.timedelta(days=1)).date()
        params = ctx["params"]
        settings = _settings()
        planned = plan_run(settings, run.run_id, params.get("from_ds"), params.get("to_ds"), scheduled_day)
        # The run id and "Run After" are the moment the run may start (the end of its day), not the day it covers.
        log.info("data days %s..%s (run %s, logical date %s, run after %s)", planned.from_ds, planned.to_ds, run.run_id,
                 ctx.get("logical_date"), run.run_after)
        return submission(settings, planned)

    @task.sensor(doc_md="Wait until the raw partition of the day has landed (scheduled runs only).",
                 poke_interval=300, timeout=6 * 3600, mode="reschedule", retries=0)
    def wait_for_raw(run_plan: dict) -> PokeReturnValue:
        from freshrec.pipeline.features.runs import FeaturesPlan, raw_partition_landed

        p = FeaturesPlan.from_dict(run_plan)
        if p.manual:
            log.info("days %s..%s given in the run conf: not waiting", p.from_ds, p.to_ds)
            return PokeReturnValue(is_done=True)
        return PokeReturnValue(is_done=all(raw_partition_landed(_settings(), d) for d in p.days))

    @task(doc_md="Great Expectations suite on the raw batch; fails the run on a bad batch.", retries=0,
          execution_timeout=dt.timedelta(minutes=15))
    def validate_raw(run_plan: dict) -> dict:
        from freshrec.pipeline.features.runs import FeaturesPlan
        from freshrec.pipeline.validation.raw_suite import validate_raw as check

        report = check(_settings(), FeaturesPlan.from_dict(run_plan).days)
        log.info("raw batch valid; Data Docs: %s", report["data_docs"])
        return {"rows": report["rows"], "data_docs": report["data_docs"]}

    spark_features = SparkSubmitOperator(
        task_id="spark_features",
        doc_md="Clean, quarantine, features and online snapshot into the staging dir (Spark).",
        conn_id="spark_default",
        application="{{ ti.xcom_pull(task_ids='plan')['application'] }}",
        application_args="{{ ti.xcom_pull(task_ids='plan')['application_args'] }}",
        env_vars="{{ ti.xcom_pull(task_ids='plan')['spark_env'] }}",
        conf={"spark.driver.memory": "{{ ti.xcom_pull(task_ids='plan')['driver_memory'] }}"},
        name="freshrec-features",
        retries=1,
    )

    @task(doc_md="Features suite on the staged run (identity, quarantine share, keys, ranges, drift).", retries=0,
          execution_timeout=dt.timedelta(minutes=15))
    def validate_features(run_plan: dict) -> dict:
        from pathlib import Path

        from freshrec.pipeline.features.runs import FeaturesPlan, discard
        from freshrec.pipeline.validation.features_suite import validate_staged

        p = FeaturesPlan.from_dict(run_plan)
        try:
            report = validate_staged(_settings(), Path(p.staging))
        except Exception:
            discard(p)
            raise
        log.info("features valid; Data Docs: %s", report["data_docs"])
        return {"quarantine": report["quarantine"], "data_docs": report["data_docs"]}

    @task(doc_md="Atomically publish the validated partitions and online snapshot; updates the features Asset.",
          outlets=[FEATURES])
    def publish(run_plan: dict) -> dict:
        from freshrec.pipeline.features.runs import FeaturesPlan
        from freshrec.pipeline.features.runs import publish as publish_run

        published = publish_run(_settings(), FeaturesPlan.from_dict(run_plan))
        log.info("published %d day(s), snapshot %s (live: %s, %s)", len(published["published_days"]), published["snapshot"],
                 published["snapshot_live"], published["snapshot_reason"])
        return published

    run_plan = plan()
    land_stream() >> run_plan
    raw_ok = validate_raw(run_plan)
    wait_for_raw(run_plan) >> raw_ok >> spark_features >> validate_features(run_plan) >> publish(run_plan)


features_daily()
