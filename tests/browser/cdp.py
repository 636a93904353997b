"""A small Chrome DevTools Protocol driver for headless Debian chromium (no browser download needed).

Chromium starts with a fresh profile and ``--remote-debugging-port=0``; the chosen port is read from
the profile's DevToolsActivePort file. Commands go over the page target's websocket; events that
arrive while waiting for a reply are kept so ``wait_event`` can find them.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from freshrec.tools.bench.edge_browser import stop_chromium

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--remote-debugging-port=0",
]


class CDPError(RuntimeError):
    pass


# What Chromium answers an evaluation cut short by a navigation of the page.
NAVIGATING = ("Inspected target navigated or closed", "Execution context was destroyed", "Cannot find context with specified id")


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One browser tab driven over its websocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._events: deque[dict[str, Any]] = deque()

    def send(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == msg_id:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self._events.append(message)

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in list(self._events):
                if event["method"] == method:
                    self._events.remove(event)
                    return event.get("params", {})
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} event within {timeout}s")
            try:
                message = json.loads(self._ws.recv(timeout=remaining))
            except TimeoutError:
                continue
            if "method" in message:
                self._events.append(message)

    def navigate(self, url: str, timeout: float = 60) -> None:
        self._events.clear()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60, what: str | None = None) -> Any:
        """Poll a JS expression until it is truthy (SPAs render after the load event).

        A page that navigates while the expression runs (the app's own redirect to its login page, say)
        makes Chromium drop the evaluation; that poll counts as "not yet", not as a failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except CDPError as exc:
                if not any(marker in str(exc) for marker in NAVIGATING):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"{what or expression} not true within {timeout}s (url {self.evaluate('location.href')})")

    def type_into(self, selector: str, text: str) -> None:
        """Focus an input and type into it like a user (React sees real input events)."""
        focus = f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; e.focus(); return true; }})()"
        if not self.evaluate(focus):
            raise CDPError(f"no element matches {selector}")
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


class Browser:
    """Headless chromium with a throw-away profile; use as a context manager."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.profile = Path(tempfile.mkdtemp(prefix="freshrec-chromium-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._ws: ClientConnection | None = None

    def __enter__(self) -> Page:
        self.process = subprocess.Popen(
            [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port = self._devtools_port(timeout=60)
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        # Entered as a context manager (websockets deprecates a bare connect()); closed in __exit__.
        self._ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30).__enter__()
        tab = Page(self._ws)
        tab.send("Page.enable")
        tab.send("Runtime.enable")
        return tab

    def _devtools_port(self, timeout: float) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise CDPError(f"chromium exited with {self.process.returncode} before opening DevTools")
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().splitlines()[0])
            time.sleep(0.2)
        raise CDPError(f"chromium did not open DevTools within {timeout}s")

    def __exit__(self, *exc: object) -> None:
        stop_chromium(self._ws, self.process, self.profile)
