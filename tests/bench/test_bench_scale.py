"""``freshrec bench scale`` on small catalogues: the ANN path finds the exact top-10 and the report has its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_scale_bench_reports_recall_latency_and_index_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from freshrec.core.settings import load_settings
    from freshrec.tools.bench.scale import run

    monkeypatch.setenv("FRESHREC_SERVING__MAX_CANDIDATES", "1000")  # the served server retrieves for 3,000 items
    report_path = run(load_settings(home=tmp_path / "home"), items=[3_000], fetch=100, served_users=400, rates=[100],
                      duration_s=1.0)
    report = json.loads(report_path.read_text())
    assert [r["items"] for r in report["sizes"]] == [3_000]
    for row in report["sizes"]:
        assert row["recall@10"] >= 0.95  # against the torch student's exact top-10
        assert row["exact_graph_recall@10_vs_torch"] == pytest.approx(1.0)  # the reference path is exact
        assert row["mean_candidates"] >= 100
        for path in ("ann", "exact"):
            assert 0 < row["latency"][path]["p50_ms"] <= row["latency"][path]["p99_ms"]
        assert row["index"]["items"] == row["items"] and row["index"]["bytes"] > 0 and row["index"]["build_s"] > 0
        assert {"items.usearch", "student.user.onnx", "student.candidates.onnx", "student.fp32.onnx"} <= set(row["file_bytes"])
    served = report["served"]
    assert served["items"] == 3_000 and served["users"] == 400 and served["retrieval"]["fetch"] == 100
    assert served["single_stream"]["non_2xx"] == 0 and served["single_stream"]["p50_ms"] > 0
    assert served["open_loop"][0]["offered_rate"] == 100 and len(served["memory"]["workers"]) == 2
    assert served["memory"]["host_pss_mb"] > 0
    assert (report_path.parent / "scale.png").stat().st_size > 10_000
