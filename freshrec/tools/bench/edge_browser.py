"""Headless Debian chromium driven over the Chrome DevTools Protocol, for the edge benchmark.

Chromium starts with a fresh profile and ``--remote-debugging-port=0``; the port is read from the profile's
DevToolsActivePort file and commands go over the page target's websocket. No browser download: a missing
chromium is an error (infra/local/sysdeps.sh installs it).
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from freshrec.core.errors import FreshRecError

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--remote-debugging-port=0"]


class BrowserError(FreshRecError):
    """Chromium is missing, did not start, or a page script failed."""


class Chromium:
    """``with Chromium() as tab: tab.evaluate("1 + 1")``."""

    def __init__(self) -> None:
        executable = shutil.which("chromium") or shutil.which("chromium-browser")
        if executable is None:
            raise BrowserError("chromium is not installed (bash infra/local/sysdeps.sh installs it)")
        self.executable = executable
        self.profile = Path(tempfile.mkdtemp(prefix="freshrec-edge-chromium-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> Chromium:
        self.process = subprocess.Popen([self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (marker.is_file() and marker.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BrowserError("chromium did not open DevTools")
            time.sleep(0.1)
        port = int(marker.read_text().splitlines()[0])
        page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page")
        self._ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.send("Page.enable")
        self.send("Network.enable")
        return self

    def send(self, method: str, timeout: float = 120, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:  # events arriving meanwhile are not needed here
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == msg_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not load")
            time.sleep(0.1)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:200]!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    def offline(self, offline: bool) -> None:
        self.send("Network.emulateNetworkConditions", offline=offline, latency=0, downloadThroughput=-1, uploadThroughput=-1)

    def __exit__(self, *exc: object) -> None:
        stop_chromium(self._ws, self.process, self.profile)


def stop_chromium(ws: ClientConnection | None, process: subprocess.Popen | None, profile: Path) -> None:
    """Close the DevTools socket, end chromium (killed after 15 s) and delete its throwaway profile."""
    if ws is not None:
        ws.close()
    if process is not None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(profile, ignore_errors=True)
