"""The traffic simulator against a real `freshrec serve`, with a real synthetic ground truth."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from freshrec.core.errors import InvalidInput
from freshrec.pipeline.monitoring.promtext import parse_scrape
from freshrec.tools.data.world import WorldConfig, make_world, save_world
from freshrec.tools.simulation.simulator import SimulationConfig, SimulationReport, Simulator, first_click
from tests.release.stack import N_ITEMS, N_USERS, release_world, serving  # noqa: F401 (fixtures)


def test_first_click_is_a_cascade():
    probabilities = np.array([0.1, 0.9, 0.9])
    assert first_click(probabilities, np.array([0.5, 0.5, 0.0])) == 1
    assert first_click(probabilities, np.array([0.05, 0.0, 0.0])) == 0
    assert first_click(probabilities, np.array([0.5, 0.95, 0.95])) is None


def test_config_is_bounded():
    with pytest.raises(InvalidInput):
        SimulationConfig(url="http://x", rate=0, duration_s=1, day=0)
    with pytest.raises(InvalidInput):
        SimulationConfig(url="http://x", rate=1e6, duration_s=100, day=0)


def test_status_line_shows_pace_click_rate_and_errors():
    report = SimulationReport(planned=100, sent=50, shed=2)
    report.variants["champion"].requests, report.variants["champion"].clicks = 40, 4
    report.variants["canary"].requests, report.variants["canary"].clicks = 8, 2
    report.failed["503"] += 2
    assert report.status_line(10.0) == ("10 s: 5.0 req/s, 48 answered, CTR 0.1250 (canary 0.2500 of 8, champion 0.1000 "
                                        "of 40), errors 2 (503 x2), shed 2")
    assert SimulationReport(planned=1).status_line(0.0) == "0 s: 0.0 req/s, 0 answered, CTR -, errors 0, shed 0"


@pytest.fixture
def truth(release_world):
    # Same id scheme as the serving fixture (u<n>, i<n>) so clicks land on served items.
    world = make_world(WorldConfig(users=N_USERS, items=N_ITEMS, seed=5, initial_share=1.0))
    return world, save_world(world, release_world.home / "truth.npz")


@pytest.mark.slow
def test_open_loop_traffic_and_clicks_reach_serving(release_world, serving, truth):
    world, _ = truth
    config = SimulationConfig(url=serving, rate=100, duration_s=2.0, day=dt.date(2026, 1, 10), seed=3)
    report = asyncio.run(Simulator(world, config).run())
    summary = report.to_dict()
    assert report.planned == 200 and report.sent == 200 and report.shed == 0
    assert dict(report.failed) == {} and report.feedback_failed == 0
    champion = summary["variants"]["champion"]
    assert champion["requests"] == 200 and champion["clicks"] > 0
    # Open loop: the schedule, not the server, sets the pace (a closed loop against this fast server would
    # finish well under 1.9 s; the upper bound leaves a busy CI box room for the last responses).
    assert 1.9 <= report.elapsed_s <= 6.0
    scraped = parse_scrape(httpx.get(f"{serving}/metrics", timeout=5).text)
    assert scraped.variant("champion").clicks == champion["clicks"]
    assert scraped.variant("champion").impressions >= 200


@pytest.mark.slow
def test_simulate_cli_writes_a_report(release_world, serving, truth):
    _, truth_path = truth
    cli = str(Path(sys.executable).with_name("freshrec"))
    proc = subprocess.run([cli, "simulate", "--rate", "40", "--duration", "1", "--truth", str(truth_path),
                           "--day", "2026-01-10", "--report-every", "0.4"],
                          env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # One line per period and one at the end: what `make up`'s simulator log shows while a canary runs.
    status = [line for line in proc.stdout.splitlines() if line.startswith("simulate: ") and "req/s, " in line]
    assert 2 <= len(status) <= 5, proc.stdout
    assert status[-1].startswith("simulate: done: ") and " 40 answered, CTR 0." in status[-1], status[-1]
    assert "(champion 0." in status[-1] and ", errors 0, shed 0" in status[-1], status[-1]
    reports = sorted((release_world.home / "reports" / "simulate").glob("*.json"))
    assert reports and reports[-1].with_suffix(".png").is_file()
    body = json.loads(reports[-1].read_text())
    assert body["sent"] == 40 and body["variants"]["champion"]["requests"] == 40
