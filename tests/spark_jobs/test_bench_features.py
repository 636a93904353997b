"""``freshrec bench features`` end to end on tiny sizes: the Spark job as a subprocess, DuckDB beside it, the
report (JSON + PNG) with throughput, stage times, ratios, peak memory and linearity."""

from __future__ import annotations

import json

import pytest

from freshrec.tools.bench import features as bench

pytestmark = pytest.mark.slow


def test_features_bench_reports_both_engines(settings):
    path = bench.run(settings, sizes=[10_000, 20_000])
    report = json.loads(path.read_text())
    assert path.with_suffix(".png").stat().st_size > 0
    assert report["cores"] >= 1 and report["target_events_per_s_per_core"] == bench.TARGET_EVENTS_PER_S_PER_CORE
    small, large = report["results"]
    assert 0.8 * 10_000 < small["events"] < 1.2 * 10_000 and 0.8 * 20_000 < large["events"] < 1.2 * 20_000
    for entry in (small, large):
        spark, duck = entry["spark"], entry["duckdb"]
        assert set(spark["stages_s"]) == {"clean", "features", "online_snapshot", "manifests"}
        assert spark["job_s"] == pytest.approx(sum(spark["stages_s"].values()), abs=0.02)
        assert spark["wall_s"] > spark["job_s"]  # the JVM start is outside the job's own timings
        assert spark["peak_rss_mb"] > 100 and duck["peak_rss_mb"] > 10
        assert duck["rows"]["users"] > 0 and duck["rows"]["items"] > 0
        assert entry["spark_events_per_s_per_core"] == round(entry["events"] / spark["job_s"] / report["cores"])
        assert entry["spark_job_vs_duckdb"] >= entry["spark_like_for_like_vs_duckdb"] >= entry["spark_features_stage_vs_duckdb"] > 0
    assert set(report["linearity"]) == {str(small["events"]), str(large["events"])}
    # the daily run after a bootstrap, at the largest size only: three more real jobs, each with its own timings
    assert "daily" not in small
    daily = large["daily"]
    for run in ("bootstrap", "day_full", "day_incremental"):
        assert daily[run]["input_rows"] > 0 and daily[run]["wall_s"] > daily[run]["job_s"] > 0, (run, daily[run])
    assert daily["day_incremental"]["input_rows"] < daily["bootstrap"]["input_rows"]  # one day against all the others
    for ratio in ("incremental_vs_bootstrap", "incremental_vs_full_day"):
        assert set(daily[ratio]) == {"wall_s", "job_s", "job_cpu_s"} and all(v > 0 for v in daily[ratio].values())
    # The bench cleans its staging (the clean events are large at real sizes) but keeps the generated data.
    home = settings.home / "bench" / "features" / "events-10000"
    assert (home / ".generated").exists() and not (home / "lake" / "_staging" / "bench").exists()
