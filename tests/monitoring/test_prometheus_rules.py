"""Prometheus: the committed rules are what the generator writes (from the DAG's definitions for the SLO
rules), they name only metrics the serving tier exports, promtool accepts them and passes the
hand-computed unit tests, and the monitor reads a real Prometheus server."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.net import free_port

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "infra" / "prometheus"


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run infra/local/sysdeps.sh (Debian package prometheus)"
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def _generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_rules", PROM / "generate_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_rules_match_the_generator():
    rendered = _generator().render_all()
    assert sorted(rendered) == sorted(p.name for p in (PROM / "rules").glob("*.yml")), "a rule file nothing generates"
    for name, text in rendered.items():
        assert (PROM / "rules" / name).read_text() == text, \
            f"{name} is stale: run .venv/bin/python infra/prometheus/generate_rules.py"


def test_rules_name_only_exported_metrics():
    from freshrec.serving.metrics import ServingMetrics

    exported = set()
    for family in ServingMetrics(10.0).registry.collect():
        exported |= {family.name, *(f"{family.name}{s}" for s in ("_total", "_bucket", "_count", "_sum"))}
    for path in (PROM / "rules").glob("*.yml"):
        used = set(re.findall(r"\b(freshrec_[a-z_]+)\b", path.read_text()))
        assert used and used <= exported, f"{path.name} names metrics serving does not export: {used - exported}"


def test_promtool_checks_config_and_rules():
    result = _run(_promtool(), "check", "config", str(PROM / "prometheus.yml"))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "29 rules found" in out and "11 rules found" in out


@pytest.mark.parametrize("tests", ["freshrec_slo_test.yml", "freshrec_events_test.yml"])
def test_promtool_rule_unit_tests_pass(tests: str):
    result = _run(_promtool(), "test", "rules", str(PROM / "tests" / tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize(("rules", "tests", "old", "new"), [
    # The page factor 14.4x made 100x.
    ("freshrec_slo.rules.yml", "freshrec_slo_test.yml", "(14.4 * 0.001)", "(100 * 0.001)"),
    # Every 503 counted as a server error, the store-down alert waiting 10 minutes or firing where live state
    # is off, the spike compared with 30x.
    ("freshrec_events.rules.yml", "freshrec_events_test.yml", ',status!="503"', ""),
    ("freshrec_events.rules.yml", "freshrec_events_test.yml", "for: 1m", "for: 10m"),
    ("freshrec_events.rules.yml", "freshrec_events_test.yml", "and on (job, instance)", "or on (job, instance)"),
    ("freshrec_events.rules.yml", "freshrec_events_test.yml", "(3 * freshrec", "(30 * freshrec"),
])
def test_promtool_unit_tests_can_fail(tmp_path, rules: str, tests: str, old: str, new: str):
    # The same test file against subtly wrong rules must fail: the tests have teeth.
    text = (PROM / "rules" / rules).read_text()
    assert old in text
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / rules).write_text(text.replace(old, new))
    (tmp_path / "tests").mkdir()
    shutil.copy(PROM / "tests" / tests, tmp_path / "tests" / "t.yml")
    result = _run(_promtool(), "test", "rules", str(tmp_path / "tests" / "t.yml"))
    assert result.returncode != 0


@pytest.mark.slow
def test_monitor_reads_counters_from_a_real_prometheus(tmp_path, release_world, serving):
    from freshrec.pipeline.monitoring.promtext import parse_scrape
    from freshrec.pipeline.monitoring.sources import scrape_prometheus

    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: run infra/local/sysdeps.sh"
    for _ in range(50):
        httpx.post(f"{serving}/v1/recommend", json={"user_id": release_world.users[0], "k": 5}, timeout=5)
    target = serving.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: s\n"
                      f"    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                scraped = scrape_prometheus(url)
                if scraped.variant("champion").requests >= 50:
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            assert time.monotonic() < deadline, "Prometheus never scraped the replica"
            time.sleep(0.5)
        direct = parse_scrape(httpx.get(f"{serving}/metrics", timeout=5).text).variant("champion")
        via_prometheus = scraped.variant("champion")
        assert via_prometheus.latency.bounds == direct.latency.bounds
        assert via_prometheus.requests == direct.requests == 50
        assert via_prometheus.impressions == direct.impressions
    finally:
        proc.terminate()
        proc.wait(timeout=20)
