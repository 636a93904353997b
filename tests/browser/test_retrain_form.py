"""The retrain form triggers with its defaults (no required field left empty) and says what `force` does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.cdp import Browser
from tests.browser.ui import login
from tests.infra.stack import LocalStack

TRIGGER_IN_FORM = ("[...document.querySelectorAll('[role=dialog] button')]"
                   ".find(b => b.innerText.trim() === 'Trigger')")
FORM = f"({TRIGGER_IN_FORM}).closest('[role=dialog]')"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_retrain_form_can_be_triggered_with_its_defaults(local_stack: LocalStack, chromium: str, artifacts_dir: Path) -> None:
    url = local_stack.airflow_url
    with Browser(chromium) as page:
        login(page, url)
        page.navigate(f"{url}/dags/retrain")
        page.wait_for("!!document.querySelector('button[aria-label=\"Trigger Dag\"]')", 90, "the Trigger button")
        page.evaluate("document.querySelector('button[aria-label=\"Trigger Dag\"]').click()")
        page.wait_for(f"!!({TRIGGER_IN_FORM})", 30, "the trigger form")
        # The form's parameters are folded away until asked for: open them so their texts can be read.
        page.evaluate(f"[...{FORM}.querySelectorAll('button')]"
                      ".filter(b => /run parameters/i.test(b.innerText)).forEach(b => b.click())")
        page.wait_for(f"{FORM}.innerText.includes('slo_monitor')", 30, "the force description in the form")
        page.screenshot(artifacts_dir / "retrain_form.png")
        assert page.evaluate(f"!({TRIGGER_IN_FORM}).disabled"), "Trigger is disabled with the form's defaults"
