"""``freshrec bench faults``: every scenario runs for real (``freshrec serve`` processes, the local Postgres,
tmpfs or RLIMIT_FSIZE, kill -9) in its quick form, and its verdict, computed from its counts, must pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freshrec.core.errors import InvalidInput
from freshrec.core.settings import Settings, load_settings
from freshrec.tools.bench import faults

pytestmark = pytest.mark.postgres


@pytest.fixture
def settings(freshrec_home: Path) -> Settings:
    return load_settings(home=freshrec_home)


@pytest.mark.parametrize("name", sorted(set(faults.SCENARIOS) - {"overload"}))
def test_scenario_passes(settings: Settings, name: str) -> None:
    result = faults.run_scenario(settings, name, quick=True)
    assert result["verdict"] == "pass", json.dumps(result, indent=1, default=str)


def test_overload_sheds_with_retry_after_and_keeps_admitted_latency_bounded(settings: Settings) -> None:
    """The latency checks are in the report; here only what a shared CI box cannot blur: without shedding
    by queue age, the admitted p99 at 5x is seconds (the queue grows for the whole run)."""
    result = faults.run_scenario(settings, "overload", quick=True)
    checks = result["checks"]
    assert checks["only_200_or_503"] and checks["shed_some"] and checks["every_503_has_retry_after"], result
    assert checks["no_crash"], result
    assert result["admitted_ms"]["p99"] < 1000, result


def test_run_writes_the_report_and_a_table(settings: Settings) -> None:
    path = faults.run(settings, scenarios="concurrent_promotions", quick=True)
    report = json.loads(path.read_text())
    assert report["verdicts"] == {"concurrent_promotions": "pass"} and report["passed"]
    assert path.with_suffix(".png").stat().st_size > 0


def test_unknown_scenarios_are_refused(settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="no_such_fault"):
        faults.run(settings, scenarios="worker_kill,no_such_fault")
