"""The UI's backfill form (Trigger -> Backfill) creates a backfill that ends in a successful run and a
published partition, like the REST API and the CLI (tests/infra/test_backfill.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from freshrec.core.layout import Layout
from tests.browser.cdp import Browser
from tests.browser.ui import click_button, login, set_datetime
from tests.infra.backfills import DAG, partition_fingerprint, wait_backfill
from tests.infra.stack import UI_DAY, LocalStack


def new_backfills(stack: LocalStack, known: set[int], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    with stack.api() as api:
        while True:
            backfills = api.get("/backfills", params={"dag_id": DAG}).raise_for_status().json()["backfills"]
            created = [b for b in backfills if b["id"] not in known]
            if created or time.monotonic() > deadline:
                return created
            time.sleep(1)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # starts a stack, then one Spark run per backfilled day
def test_backfill_form_runs_one_day(local_stack: LocalStack, chromium: str, artifacts_dir: Path) -> None:
    url = local_stack.airflow_url
    with local_stack.api() as api:
        before = {b["id"] for b in api.get("/backfills", params={"dag_id": DAG}).raise_for_status().json()["backfills"]}
    with Browser(chromium) as page:
        login(page, url)
        page.navigate(f"{url}/dags/{DAG}")
        page.wait_for("!!document.querySelector('button[aria-label=\"Trigger Dag\"]')", 90, "the Trigger button")
        page.evaluate("document.querySelector('button[aria-label=\"Trigger Dag\"]').click()")
        page.wait_for("!!document.querySelector('[role=dialog] input[value=backfill]')", 30, "the trigger form")
        page.evaluate("document.querySelector('[role=dialog] input[value=backfill]').click()")
        page.wait_for("document.querySelectorAll('[data-testid=datetime-input]').length == 2", 30, "the backfill form")
        set_datetime(page, 0, UI_DAY)
        set_datetime(page, 1, UI_DAY)
        # The form dry-runs the range and says how many runs it will create.
        page.wait_for("document.body.innerText.includes('1 run will be triggered')", 30, "the dry-run count")
        page.screenshot(artifacts_dir / "01_backfill_form.png")
        click_button(page, "Run Backfill")
        created = new_backfills(local_stack, before, timeout=30)
        page.screenshot(artifacts_dir / "02_after_submit.png")

    assert len(created) == 1, "the form did not create a backfill"
    backfill = created[0]
    assert backfill["from_date"][:10] == backfill["to_date"][:10] == UI_DAY.isoformat()
    runs = wait_backfill(local_stack, backfill["id"])
    assert [(r["logical_date"][:10], r["state"]) for r in runs] == [(UI_DAY.isoformat(), "success")]
    partition = Layout(local_stack.home).features_partition(UI_DAY)
    prints = partition_fingerprint(partition)
    assert prints, f"nothing published under {partition}"
    (artifacts_dir / "backfill.json").write_text(json.dumps({"backfill": backfill, "tables": prints}, indent=2, default=str))
