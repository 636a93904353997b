"""GET /canary and /v1/canary show a running release as the controller records it: the weight, each check of
the latest window and the verdict so far; then the outcome among the recent releases. Checked against a real
app, a real registry and the real controller, whose analysis waits are replaced by traffic and page reads."""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from freshrec.core.release_status import read_release_status
from freshrec.pipeline.monitoring.promtext import Histogram, VariantCounters
from freshrec.pipeline.monitoring.serving_api import ServingClient
from freshrec.pipeline.release.analysis import CanaryPolicy, analyse_window
from freshrec.pipeline.release.controller import CanaryController, ReleasePlan
from freshrec.pipeline.release.progress import ReleaseProgress
from freshrec.serving.canary_page import CSP, canary_view
from freshrec.serving.routing import RoutingTable
from tests.browser.cdp import Browser, find_chromium
from tests.serving.conftest import RunningServer, World, admin_headers

CHECKS = ["min_sample", "p99_latency", "error_rate", "score_psi", "online_ctr"]


def test_no_canary_running(server: RunningServer, world: World, champion: str) -> None:
    status = httpx.get(f"{server.url}/v1/canary").json()
    assert status["summary"] == "no canary running"
    assert status["champion"] == {"version": champion}
    assert status["canary"] is None and status["release"] is None and status["recent"] == []

    page = httpx.get(f"{server.url}/canary")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP and "default-src 'none'" in CSP
    assert "v1/canary" in page.text and not re.search(r"(src|href)=\"?https?:", page.text)  # nothing from a CDN


def test_a_release_shows_weight_checks_and_verdict_so_far(server: RunningServer, world: World, champion: str) -> None:
    canary = world.register("run-2", seed=2)
    seen: list[dict[str, Any]] = []

    def window_with_traffic(_: float) -> None:
        """The controller's analysis wait: what a watcher sees now, then the window's traffic."""
        seen.append(httpx.get(f"{server.url}/v1/canary").json())
        with httpx.Client(base_url=server.url) as http:
            for n in range(40):
                assert http.post("/v1/recommend", json={"user_id": f"u{n}", "k": 5}).status_code == 200

    plan = ReleasePlan(version=canary, steps=(50.0, 100.0), interval_s=1.0,
                       policy=CanaryPolicy.from_settings(world.settings, min_requests=5), convergence_timeout_s=10)
    settings = world.settings.model_copy(update={"serving_url": server.url})  # type: ignore[attr-defined]
    with ServingClient(settings) as client:
        controller = CanaryController(world.registry, client, plan, sleep=window_with_traffic,
                                      progress=ReleaseProgress(world.home, canary, plan.steps))
        result = controller.run()
        assert result.decision == "promote", result.to_dict()

        first, second = seen
        assert first["canary"] == {"version": canary, "weight": 50.0, "shadow": False}
        assert first["summary"] == f"canary {canary} at 50% of traffic; verdict so far: pending"
        assert first["release"]["state"] == "running" and first["release"]["checks"] == []
        assert first["release"]["steps"] == [50.0, 100.0] and first["release"]["stale"] is False

        # The second window's wait: the first window's checks, as the controller judged them.
        release = second["release"]
        assert second["canary"]["weight"] == 100.0 and release["weight"] == 100.0
        assert release["verdict_so_far"] == "pass" and second["summary"].endswith("verdict so far: pass")
        assert [c["name"] for c in release["checks"]] == CHECKS
        sample = release["checks"][0]
        assert sample["outcome"] == "pass" and sample["value"] >= 5 and sample["threshold"] == 5
        assert [(w["weight"], w["outcome"], w["action"]) for w in release["windows"]] == [(50.0, "pass", "advance")]
        assert release["windows"][0]["canary_requests"] == sample["value"]

        controller.promote(result.reasons, {"analyses": result.analyses})
    status = httpx.get(f"{server.url}/v1/canary").json()
    assert status["summary"] == "no canary running" and status["release"] is None
    assert status["champion"] == {"version": canary}
    [recent] = status["recent"]
    assert recent["version"] == canary and recent["outcome"] == "promoted" and recent["windows"] == 2
    assert recent["finished_at"] is not None


def test_finished_and_interrupted_releases_keep_no_host_paths(tmp_path: Path) -> None:
    home = tmp_path / "home with space"
    ReleaseProgress(home, "2", (5.0, 100.0)).weight(5.0)
    ReleaseProgress(home, "3", (5.0, 100.0)).weight(5.0)  # "2"'s task died: a new release takes over
    ReleaseProgress(home, "3", (5.0, 100.0)).finished(
        "rejected", [f"preflight: artifact {home}/models/run-3/student.onnx is missing"])
    status = read_release_status(home)
    assert status.current is None
    assert [(r.version, r.state) for r in status.history] == [("3", "rejected"), ("2", "interrupted")]

    view = canary_view(RoutingTable(), status, home, dt.datetime.now(dt.UTC))
    assert view["summary"] == "no canary running" and view["champion"] is None
    reason = view["recent"][0]["reasons"][0]
    assert str(tmp_path) not in reason and "run-3/student.onnx" in reason


def test_an_unreadable_status_file_reads_as_no_release(tmp_path: Path) -> None:
    from freshrec.core.layout import Layout

    path = Layout(tmp_path).release_status
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert read_release_status(tmp_path).current is None


@pytest.mark.skipif(find_chromium() is None, reason="needs chromium (installed by sysdeps for the browser tests)")
def test_the_page_renders_the_canary_in_a_browser(server: RunningServer, world: World, champion: str,
                                                  tmp_path: Path) -> None:
    """The inline script runs under the page's Content-Security-Policy and fills the tables from /v1/canary."""
    canary = world.register("run-2", seed=2)
    world.registry.start_canary(canary, 25.0, actor="test", reason="page test")
    httpx.post(f"{server.url}/admin/reconcile", headers=admin_headers())
    progress = ReleaseProgress(world.home, canary, (25.0, 100.0))
    progress.weight(25.0)
    latency = Histogram([0.005, 0.01, math.inf], [250.0, 300.0, 300.0])
    window = analyse_window(VariantCounters(latency), VariantCounters(), CanaryPolicy(), 25.0)
    progress.window(window, "advance", 0)
    with Browser(find_chromium() or "") as page:
        page.navigate(f"{server.url}/canary")
        summary = page.wait_for("document.getElementById('summary').textContent.includes('verdict')", timeout=30,
                                what="the page's summary")
        assert summary
        assert page.evaluate("document.getElementById('summary').textContent") == (
            f"canary {canary} at 25% of traffic; verdict so far: pass")
        rows = page.evaluate("[...document.querySelectorAll('#checks tr')].map((r) => r.innerText.split('\\t')[0])")
        assert rows == ["check", *CHECKS]
        assert page.evaluate("document.querySelector('#checks tr:nth-child(2) td:nth-child(2)').className") == "pass"
        assert page.evaluate("document.getElementById('champion').textContent") == champion
        page.screenshot(tmp_path / "canary.png")
