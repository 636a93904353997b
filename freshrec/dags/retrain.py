"""`retrain`: teacher -> distilled student (+ control) -> evaluation -> ONNX int8 -> gates -> registry."""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from freshrec.dags.assets import FEATURES

OWNER = {"owner": "model", "retries": 0}

DOC = """
### retrain

Trains a new candidate from the clean events in the lake and records it in the registry.
Runs when the features Asset is updated (`features_daily` published a day) and weekly as a fallback.

1. **plan**: run folder `models/<run id>/`, the champion to warm-start from; skips the run when the
   champion already covers the latest feature day, unless `force` (empty `force`: manual runs, from the UI,
   the REST API, the CLI or slo_monitor, retrain; scheduled and asset-triggered ones skip).
2. **build_datasets**: vocabulary (stable ids; a warm start appends new ones), the holdout of `protocol`
   (`temporal`: last `holdout_days`; `msr`: 75/25 stratified by item, seed 42; `sequential`, `prequential`),
   early-stopping split (a hash of user and item: the same pairs in every run, so a warm start is never
   validated on items its parent learnt). The histories of every part (with last-interaction times and
   event-strength signals) are built by Spark (`freshrec.spark.training_input`, a subprocess) with the
   function that builds the online snapshot, so training and serving order a history alike.
3. **train_teacher**: large wide & deep model. Wide: session-aware EASE in closed form (item pairs
   weighted by how close in time a user took them; gamma and lambda chosen on the validation split) plus a
   popularity prior for cold users. Deep: trained on top with full softmax and early stopping.
4. **train_students**: the small serving model distilled from the teacher (starts from a factorisation of
   the teacher's item-item layer, or warm from the champion's student), and the same model trained on the
   ground truth only (the control).
5. **evaluate**: full-ranking metrics on the holdout for teacher, student, control and champion.
6. **export_and_quantise**: dynamo ONNX, checker, ORT optimisation; pruned students measured (kept only
   when as good and faster); int8 recipes measured, best kept; fp16 for GPUs.
7. **parity**: torch vs ONNX Runtime scores on real histories.
8. **gates**: floor, no regression vs the champion, int8 within tolerance of fp32, export parity.
   Everything up to here judges models that never saw the holdout.
9. **refit_on_all**: when the gates passed (and `training.refit_on_all` / the `refit_on_all` param is on),
   teacher and distilled student again on *all* interactions (training part + holdout), same recipe,
   wide configuration and best epoch counts, so the newest days reach the served weights. The gated checkpoints stay as
   `<name>.eval.safetensors`. Otherwise nothing happens and the holdout-trained models are served.
10. **export_served**: the refit exported as the served graphs (fp32, int8 with the chosen recipe or, when that
    one loses more than the int8 gate allows on the refit, the next recipe that does not; fp16,
    teacher fp32); torch vs ORT parity and paired int8 fidelity added to the gates. The gated int8
    student stays as `student.eval.int8.onnx`: the next run compares its holdout with that graph.
11. **report**: JSON + PNG (`reports/retrain/<run id>/`).
12. **register_candidate**: model card (which data the served model learnt from), sha256s, registry; a
    failed gate rejects the candidate.
13. **release_decision** -> **trigger_release**: the first model is promoted directly (no champion to
    compare a canary with); later ones go to the `release` DAG, unless `trigger_release` is off.

XCom carries paths and version numbers only; everything else is a file in the run folder.
"""


def _settings():
    from freshrec.core.settings import get_settings

    return get_settings()


def _params() -> dict:
    return get_current_context()["params"]


@dag(
    dag_id="retrain",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=[FEATURES]),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["freshrec", "model"],
    default_args=OWNER,
    doc_md=DOC,
    params={
        "teacher_epochs": Param(None, type=["null", "integer"], minimum=1,
                                description="max teacher epochs (early stopping may end sooner); empty = settings"),
        "student_epochs": Param(None, type=["null", "integer"], minimum=1,
                                description="max student epochs (distilled and control); empty = settings"),
        "protocol": Param(None, type=["null", "string"], enum=[None, "temporal", "msr", "sequential", "prequential"],
                          description="holdout for evaluation and gates (empty = settings, training.protocol): temporal "
                                      "(last holdout_days), msr (75/25 by item), "
                                      "sequential (each user's last new item, time-ordered leave-last-out) or prequential "
                                      "(the last holdout_days replayed event by event, history as of each event)"),
        "force": Param(None, type=["null", "boolean"],
                       description="retrain even when the champion was trained on the latest feature day already; "
                                   "empty = yes for a run someone asked for (the UI, the REST API, the CLI, slo_monitor), "
                                   "no for scheduled and asset-triggered runs"),
        "warm_start": Param(True, type="boolean", description="start from the champion's weights (new ids get new rows)"),
        "refit_on_all": Param(None, type=["null", "boolean"],
                              description="serve a refit on all interactions once the gates passed; empty = settings "
                                          "(training.refit_on_all)"),
        "reason": Param(None, type=["null", "string"],
                        description="why this run was started, optional (slo_monitor writes its stale-model or drift "
                                    "finding here)"),
        "trigger_release": Param(True, type="boolean",
                                 description="hand a passing candidate to the release DAG (the first model is promoted directly)"),
    },
)
def retrain():
    @task
    def plan() -> dict:
        """Pick the run folder and the warm-start parent; skip when there is nothing new to learn from."""
        from airflow.sdk.exceptions import AirflowSkipException

        from freshrec.pipeline.training.run import plan_run

        params = _params()
        if params.get("reason"):
            import logging

            logging.getLogger(__name__).info("retrain requested: %s", params["reason"])
        dag_run = get_current_context()["dag_run"]
        planned = plan_run(_settings(), params, dag_run.run_id, getattr(dag_run.run_type, "value", dag_run.run_type))
        if planned.get("skip"):
            raise AirflowSkipException(planned["skip"])
        return planned

    @task
    def build_datasets(run: dict) -> dict:
        """Clean events -> vocabulary, training histories, early-stopping split and holdout (one file)."""
        from pathlib import Path

        from freshrec.pipeline.training.stages import build_datasets as build

        settings = _settings()
        path = build(settings, Path(run["run_dir"]), _params()["protocol"] or settings.training.protocol, _parent(run))
        return {**run, "data": str(path)}

    @task
    def train_teacher(run: dict) -> dict:
        """The large model: full softmax over the catalogue, early stopping, refit on the whole training part."""
        from pathlib import Path

        from freshrec.pipeline.training.stages import train_teacher as train

        epochs = _params()["teacher_epochs"] or _settings().training.teacher_epochs
        return {**run, "teacher": str(train(_settings(), Path(run["run_dir"]), epochs, _parent(run)))}

    @task
    def train_students(run: dict) -> dict:
        """The distilled student (served) and the control student (ground truth only)."""
        from pathlib import Path

        from freshrec.pipeline.training.stages import train_students as train

        epochs = _params()["student_epochs"] or _settings().training.student_epochs
        return {**run, **train(_settings(), Path(run["run_dir"]), epochs, _parent(run))}

    @task
    def evaluate(run: dict) -> dict:
        """Holdout metrics (nDCG, recall, precision, MAP, HR @10, coverage, cold users) for every model."""
        from pathlib import Path

        from freshrec.pipeline.evaluation.evaluate import evaluate_run

        champion = run.get("champion_bundle")
        return {**run, "evaluation": str(evaluate_run(Path(run["run_dir"]), Path(champion) if champion else None))}

    @task
    def export_and_quantise(run: dict) -> dict:
        """ONNX fp32 (teacher, student), int8 recipes measured and the best kept, fp16 for GPUs."""
        from pathlib import Path

        from freshrec.pipeline.export.stage import export_run

        return {**run, "export": str(export_run(Path(run["run_dir"]), _settings().gates.int8_max_loss))}

    @task
    def parity(run: dict) -> dict:
        """torch eager vs ONNX Runtime scores on real histories (the parity gate reads the result)."""
        from pathlib import Path

        from freshrec.pipeline.export.stage import check_parity

        return {**run, "parity": str(check_parity(Path(run["run_dir"])))}

    @task
    def gates(run: dict) -> dict:
        """Floor, no regression vs the champion, int8 vs fp32, parity: pass or the reasons why not."""
        from pathlib import Path

        from freshrec.pipeline.export.publish import apply_gates

        return {**run, "gates": str(apply_gates(_settings(), Path(run["run_dir"])))}

    @task
    def refit_on_all(run: dict) -> dict:
        """After passing gates: teacher and distilled student on all interactions (the served models)."""
        from pathlib import Path

        from freshrec.pipeline.training.stages import refit_on_all as refit
        from freshrec.pipeline.training.stages import refit_reason

        run_dir = Path(run["run_dir"])
        why_not = refit_reason(_settings(), run_dir, _params().get("refit_on_all"))
        if why_not:
            import logging

            logging.getLogger(__name__).info("no refit on all interactions: %s", why_not)
            return {**run, "refit": None}
        return {**run, "refit": str(refit(_settings(), run_dir, _parent(run)))}

    @task
    def export_served(run: dict) -> dict:
        """The refit as the served graphs; parity and paired int8 fidelity join the gates."""
        from pathlib import Path

        from freshrec.pipeline.export.publish import apply_served_gates
        from freshrec.pipeline.export.stage import export_served as export

        if not run.get("refit"):
            return {**run, "served_export": None}
        run_dir = Path(run["run_dir"])
        served = export(run_dir, _settings().gates.int8_max_loss)
        apply_served_gates(_settings(), run_dir)
        return {**run, "served_export": str(served)}

    @task
    def report(run: dict) -> dict:
        """Evaluation report as JSON + PNG (models side by side, training curves)."""
        from pathlib import Path

        from freshrec.pipeline.evaluation.report import write_report

        return {**run, "report": str(write_report(_settings(), Path(run["run_dir"])))}

    @task
    def register_candidate(run: dict) -> dict:
        """Model card + checksums; registers the candidate, rejecting it with reasons when a gate failed."""
        from pathlib import Path

        from freshrec.core.registry import open_registry
        from freshrec.pipeline.export.publish import publish

        parent = run.get("parent_version")
        with open_registry(_settings()) as registry:
            outcome = publish(_settings(), registry, Path(run["run_dir"]), run["dag_run_id"], int(parent) if parent else None)
        return {**run, **outcome}

    @task.branch
    def release_decision(run: dict) -> str | None:
        """First model -> promoted here; a passing candidate -> trigger_release (if enabled); else stop."""
        from freshrec.core.registry import open_registry
        from freshrec.pipeline.export.publish import release_action

        if run["state"] != "candidate":
            return None
        with open_registry(_settings()) as registry:
            action = release_action(registry, run["version"], _params()["trigger_release"])
        return "trigger_release" if action == "release" else None

    trigger = TriggerDagRunOperator(
        task_id="trigger_release",
        trigger_dag_id="release",
        conf={"version": "{{ ti.xcom_pull(task_ids='register_candidate')['version'] }}"},
        wait_for_completion=False,
        doc_md="Starts the canary release of the new candidate (`release` DAG, conf `version`).",
    )

    run = plan()
    gated = gates(parity(export_and_quantise(evaluate(train_students(train_teacher(build_datasets(run)))))))
    published = register_candidate(report(export_served(refit_on_all(gated))))
    release_decision(published) >> trigger


def _parent(run: dict):
    from pathlib import Path

    return Path(run["parent_bundle"]) if run.get("parent_bundle") else None


retrain()
