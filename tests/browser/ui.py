"""Steps in the Airflow 3 UI shared by the browser tests."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from tests.browser.cdp import Page
from tests.infra.stack import PASSWORD, USER

OPEN_POPOVER = "[data-scope=popover][data-part=content][data-state=open]"


def login(page: Page, url: str, screenshot: Path | None = None) -> None:
    """Anonymous visitors land on the simple auth manager's login form; sign in with the local login."""
    page.navigate(f"{url}/")
    page.wait_for("!!document.querySelector('input[name=username]')", 90, "the login form")
    assert "/auth/login" in page.evaluate("location.pathname"), "an anonymous visitor must land on the login page"
    page.type_into("input[name=username]", USER)
    page.type_into("input[name=password]", PASSWORD)
    if screenshot is not None:
        page.screenshot(screenshot)
    page.evaluate("document.querySelector('button[type=submit]').click()")
    page.wait_for("!location.pathname.startsWith('/auth/')", 60, "leaving the login page")


def press_escape(page: Page) -> None:
    for kind in ("keyDown", "keyUp"):
        page.send("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape", windowsVirtualKeyCode=27)


def set_datetime(page: Page, index: int, day: dt.date, hhmm: str = "00:00") -> None:
    """Fill the index-th date-time picker of the open form (a popover with Date and Time inputs)."""
    page.evaluate(f"document.querySelectorAll('[data-testid=datetime-input]')[{index}].click()")
    page.wait_for(f"!!document.querySelector('{OPEN_POPOVER} input[placeholder=\"YYYY/MM/DD\"]')", 15, "the date picker")
    page.type_into(f'{OPEN_POPOVER} input[placeholder="YYYY/MM/DD"]', day.strftime("%Y/%m/%d"))
    page.type_into(f'{OPEN_POPOVER} input[placeholder="HH:mm"]', hhmm)
    press_escape(page)
    time.sleep(0.5)


def click_button(page: Page, text: str) -> None:
    clicked = page.evaluate(
        f"(() => {{ const b = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === {text!r});"
        " if (!b || b.disabled) return false; b.click(); return true; })()"
    )
    assert clicked, f"no enabled button {text!r}"
