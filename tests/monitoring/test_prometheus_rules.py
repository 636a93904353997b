"""Prometheus: the committed rules are what the generator writes from the DAG's definitions, promtool
accepts them and passes the hand-computed unit tests, and the monitor reads a real Prometheus server."""

from __future__ import annotations

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


def test_committed_rules_match_the_dag_definitions():
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_rules", PROM / "generate_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (PROM / "rules" / "freshrec_slo.rules.yml").read_text()
    assert committed == module.render(), "rules are stale: run .venv/bin/python infra/prometheus/generate_rules.py"


def test_promtool_checks_config_and_rules():
    result = _run(_promtool(), "check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "29 rules found" in result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    result = _run(_promtool(), "test", "rules", str(PROM / "tests" / "freshrec_slo_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path):
    # The same test file against rules whose page factor is 100x must fail: the tests have teeth.
    rules = (PROM / "rules" / "freshrec_slo.rules.yml").read_text().replace("(14.4 * 0.001)", "(100 * 0.001)")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "freshrec_slo.rules.yml").write_text(rules)
    (tmp_path / "tests").mkdir()
    shutil.copy(PROM / "tests" / "freshrec_slo_test.yml", tmp_path / "tests" / "t.yml")
    result = _run(_promtool(), "test", "rules", str(tmp_path / "tests" / "t.yml"))
    assert result.returncode != 0


@pytest.mark.slow
def test_monitor_reads_counters_from_a_real_prometheus(tmp_path, release_world, serving):
    from tasks.monitoring.promtext import parse_scrape
    from tasks.monitoring.sources import scrape_prometheus

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
