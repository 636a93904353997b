"""Headless chromium logs into the Airflow UI of a running stack, lists the DAGs, opens features_daily."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.cdp import Browser
from tests.browser.ui import login
from tests.infra.stack import LocalStack

EXPECTED_DAGS = ["features_daily", "retrain", "release", "slo_monitor"]


def dag_links_js(dag_id: str) -> str:
    return f"document.querySelectorAll('a[href$=\"/dags/{dag_id}\"]').length"


@pytest.mark.slow
def test_login_list_dags_and_open_features_daily(local_stack: LocalStack, chromium: str, artifacts_dir: Path) -> None:
    url = local_stack.airflow_url
    with Browser(chromium) as page:
        login(page, url, screenshot=artifacts_dir / "01_login.png")
        page.navigate(f"{url}/dags")
        page.wait_for(dag_links_js("features_daily"), 90, "features_daily in the DAG list")
        try:
            page.wait_for(" && ".join(f"({dag_links_js(d)} > 0)" for d in EXPECTED_DAGS), 60, "all FreshRec DAGs listed")
        finally:
            page.screenshot(artifacts_dir / "02_dag_list.png")
        listed = page.evaluate(
            "[...new Set([...document.querySelectorAll('a[href*=\"/dags/\"]')]"
            ".map(a => a.getAttribute('href').split('/dags/')[1].split('/')[0]))]"
        )
        assert set(EXPECTED_DAGS) <= set(listed), f"DAG list shows {listed}"

        tasks = local_stack.api().get("/dags/features_daily/tasks").json()["tasks"]
        task_ids = json.dumps([t["task_id"].split(".")[0] for t in tasks])
        page.navigate(f"{url}/dags/features_daily")
        # The DAG page shows the tabs of a DAG (Runs, Tasks, Backfills, Code) at once and its tasks in the
        # grid once the grid's own request has answered: wait for both (or time out and fail below).
        try:
            page.wait_for("document.body.innerText.includes('Backfills') && document.body.innerText.includes('features_daily')"
                          f" && {task_ids}.some(t => document.body.innerText.includes(t))", 90, "the features_daily page and its tasks")
        finally:
            text = page.evaluate("document.body.innerText")
            page.screenshot(artifacts_dir / "03_features_daily.png")

    assert "Runs" in text and "Tasks" in text
    shown = [t["task_id"] for t in tasks if t["task_id"].split(".")[0] in text]
    assert shown, f"none of the DAG's tasks ({[t['task_id'] for t in tasks]}) is shown on its page"
    (artifacts_dir / "ui.json").write_text(json.dumps({"dags_listed": listed, "tasks_shown": shown}, indent=2))
