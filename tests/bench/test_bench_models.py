"""``freshrec bench models`` and ``freshrec bench retrain`` on a small learnable ratings file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.ratings import write_u_data

pytestmark = pytest.mark.slow


def _settings(home: Path):
    from freshrec.core.settings import load_settings

    return load_settings(home=home, training={"teacher_epochs": 2, "student_epochs": 4, "holdout_days": 3})


def test_models_bench_compares_every_model_on_the_msr_split(tmp_path: Path) -> None:
    from freshrec.tools.bench.models import run

    report_path = run(_settings(tmp_path / "home"), write_u_data(tmp_path / "ml"))
    report = json.loads(report_path.read_text())
    metrics = report["metrics"]
    expected = {"popularity", "EASE (lambda 400)", "teacher (gated)", "student (gated)", "control (gated)", "student, KD only (gated)",
                "teacher (final)", "student (final)", "student fp32 (final)", "student int8 (dynamic)"}
    assert expected <= set(metrics)
    assert all(0.0 <= m["ndcg@10"] <= 1.0 and m["users"] == report["counts"]["test_users"] for m in metrics.values())
    # clustered tastes are learnable: the teacher must beat popularity, which ignores the user
    assert metrics["teacher (final)"]["ndcg@10"] > metrics["popularity"]["ndcg@10"]
    # the exported fp32 graph ranks like its torch model
    assert metrics["student fp32 (final)"]["ndcg@10"] == pytest.approx(metrics["student (final)"]["ndcg@10"], abs=1e-9)
    comparison = report["comparisons"]["distilled_vs_control"]
    assert comparison["ci95_low"] <= comparison["mean_diff"] <= comparison["ci95_high"]
    dynamic = next(t for t in report["int8_recipes"] if t["recipe"] == "dynamic")
    assert dynamic["cpu_p50_ms"] > 0 and dynamic["max_abs_diff_vs_fp32"] >= 0
    assert report["training"]["teacher"]["wide"]["l2"] > 0
    assert (report_path.parent / "models.png").stat().st_size > 10_000
    assert not list((tmp_path / "home").glob("models-*"))  # the scratch run is removed
    # the configured order-aware models (window 8, the default) beside the order-blind variant
    order = report["order"]
    assert order["configured"] == "order-aware" and order["windows"] == {"order-blind": 0, "order-aware": 8}
    aware, blind = order["rows"]["order-aware"], order["rows"]["order-blind"]
    assert set(aware.values()) | set(blind.values()) <= set(metrics)
    assert aware["int8"] == f"student int8 ({order['int8_recipe']})" and "order-blind" in blind["int8"]
    cost = order["cost_per_request"]
    # the order terms cost FLOPs (window gather, transition vector, successor table) where the student has them,
    # and every student stays far below its teacher
    extra = cost[aware["int8"]]["mflop_per_request"] - cost[blind["int8"]]["mflop_per_request"]
    assert (extra > 0) == (order["student_windows"]["order-aware"] > 0) and extra >= 0
    assert order["student_windows"]["order-blind"] == 0
    assert cost[aware["teacher"]]["mflop_per_request"] > 10 * cost[aware["int8"]]["mflop_per_request"]
    assert all(c["cpu_p50_ms"] > 0 for c in cost.values()) and "EASE (lambda 400)" in cost
    assert report["summary"]["aware_over_blind_ndcg"] == pytest.approx(
        metrics[aware["int8"]]["ndcg@10"] / metrics[blind["int8"]]["ndcg@10"])


def test_retrain_bench_warm_start_grows_the_champion(tmp_path: Path) -> None:
    from freshrec.tools.bench.retrain import run

    report = json.loads(run(_settings(tmp_path / "home"), write_u_data(tmp_path / "ml"), new_days=6).read_text())
    warm, cold = report["variants"]["warm"], report["variants"]["cold"]
    assert report["parent"]["interactions"] < warm["counts"]["interactions"] == cold["counts"]["interactions"]
    student = warm["training"]["student"]["warm_start"]
    assert student["warm"] and "item_in.weight" in student["grown"]  # new items got new rows
    assert warm["counts"]["new_items"] > 0 and warm["counts"]["new_users"] > 0
    assert not cold["training"]["student"]["warm_start"]["warm"]
    for variant in (warm, cold):
        assert set(variant["seconds"]) == {"teacher", "students", "refit_on_all"}
        assert 0.0 <= variant["metrics"]["student"]["ndcg@10"] <= 1.0
    assert report["time_ratio_warm_over_cold"] > 0
    assert set(report["warm_minus_cold_ndcg@10"]) == {"teacher", "student"}


@pytest.mark.parametrize("protocol", ["sequential", "prequential"])
def test_models_bench_runs_the_time_ordered_protocols(tmp_path: Path, protocol: str) -> None:
    from freshrec.tools.bench.models import run

    report = json.loads(run(_settings(tmp_path / "home"), write_u_data(tmp_path / "ml"), protocol=protocol).read_text())
    assert report["protocol"] == protocol and "full ranking" in report["protocol_definition"]
    counts, metrics = report["counts"], report["metrics"]
    rankings = counts.get("test_rankings", counts["test_users"])  # prequential ranks once per held-out event
    assert {"popularity", "EASE (lambda 400)", "co-occurrence (order-blind)", "Markov-1 (last item)", "student (final)",
            "student int8 (dynamic)"} <= set(metrics)
    assert all(0.0 <= m["hr@10"] <= 1.0 and m["users"] == rankings for m in metrics.values())


def test_models_bench_reads_an_events_folder_and_refuses_what_it_cannot(tmp_path: Path) -> None:
    import datetime as dt

    from freshrec.core.errors import InvalidInput
    from freshrec.tools.bench.models import read_source
    from freshrec.tools.data.synth import SynthConfig, synthesize

    events = tmp_path / "events"
    config = SynthConfig(out=events, start=dt.date(2026, 1, 5), days=2, users=40, items=30, events_per_day=300, seed=3)
    days = list(synthesize(config))
    frame, meta = read_source(events, tmp_path / "work")
    assert len(frame) == sum(d.rows for d in days) and {"user_id", "item_id", "ts"} <= set(frame.columns)
    assert meta == events / "_meta"
    (events / "ds=2026-01-07").mkdir()
    (events / "ds=2026-01-07" / "part.csv").write_text("user_id,item_id,ts\n")
    with pytest.raises(InvalidInput, match="one format"):
        read_source(events, tmp_path / "work")
    with pytest.raises(InvalidInput, match="neither"):
        read_source(tmp_path / "missing", tmp_path / "work")
