"""``freshrec bench peers``: the adapters' shared work equals FreshRec's answers, the targets logic, and (slow) the
bench end to end with a real peer from the peers venv."""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from freshrec.core.errors import StageFailed
from freshrec.serving.contract import RecommendRequest
from freshrec.tools.bench.peers import (
    COLD_USER,
    answer_mismatch,
    ensure_peers_venv,
    peer_requirements,
    plot,
    run,
    sustained_rate,
    targets,
)
from tests.conftest import REPO
from tests.serving.conftest import World, champion, server, world  # noqa: F401 - fixtures used by name


def _freshrec_answers(url: str, users: list[str], exclude_seen: bool) -> dict[str, dict]:
    with httpx.Client(base_url=url) as client:
        return {u: client.post("/v1/recommend", json={"user_id": u, "k": 5, "exclude_seen": exclude_seen}).json()
                for u in users}


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_recommender_answers_equal_freshrec_in_one_batch(server, world: World, champion: str,  # noqa: F811
                                                         exclude_seen: bool) -> None:
    from freshrec.tools.bench.peer_apps.recommender import Recommender
    from freshrec.tools.bench.serving import _served_state

    bundle, snapshot, version = _served_state(world.settings)
    users = [*world.users, COLD_USER]
    expected = _freshrec_answers(server.url, users, exclude_seen)
    answers = Recommender(bundle, snapshot, version).recommend(
        [RecommendRequest(user_id=u, k=5, exclude_seen=exclude_seen) for u in users])
    assert [a["user_id"] for a in answers] == users
    assert {a["reason"] for a in answers} == {"personalised", "cold_start"}
    assert {u: answer_mismatch(expected[u], a) for u, a in zip(users, answers)} == dict.fromkeys(users)


def test_answer_mismatch_names_the_difference() -> None:
    base = {"user_id": "u", "model_version": "3", "variant": "champion", "reason": "personalised",
            "items": [{"item_id": "a", "score": 2.0}, {"item_id": "b", "score": 1.0}]}
    assert answer_mismatch(base, json.loads(json.dumps(base))) is None
    assert answer_mismatch(base, {**base, "items": base["items"][::-1]}).startswith("items differ")
    close = {**base, "items": [{"item_id": "a", "score": 2.0001}, {"item_id": "b", "score": 1.0}]}
    assert answer_mismatch(base, close) is None
    far = {**base, "items": [{"item_id": "a", "score": 2.01}, {"item_id": "b", "score": 1.0}]}
    assert answer_mismatch(base, far).startswith("score of a")
    assert answer_mismatch(base, {"status": 500}).startswith("user_id")


def _result(rate: float, p50: float, sustained: float | None = None) -> dict:
    return {"max_rate_within_slo": rate, "sustained_rate_within_slo": rate if sustained is None else sustained,
            "single_stream": {"p50_ms": p50}}


def test_targets_take_freshrec_best_against_best_peer() -> None:
    results = {"fr1": _result(2000, 0.5), "fr2": _result(4000, 0.7, sustained=1000), "ray": _result(1000, 2.0),
               "lit": _result(1500, 1.6, sustained=500)}
    out = targets(results, ["fr1", "fr2"], ["ray", "lit"])
    rate, p50 = out["max_rate_within_slo_vs_best_peer"], out["single_stream_p50_vs_best_peer"]
    assert (rate["best_peer"], rate["value"], rate["met"]) == ("lit", 4000 / 1500, True)
    assert rate["sustained"] == {"freshrec": 2000, "best_peer": 1000, "value": 2.0}
    assert (p50["best_peer"], p50["value"], p50["met"]) == ("lit", 0.5 / 1.6, True)
    missed = targets({"fr": _result(2000, 1.0), "ray": _result(1500, 1.5)}, ["fr"], ["ray"])
    assert not missed["max_rate_within_slo_vs_best_peer"]["met"] and not missed["single_stream_p50_vs_best_peer"]["met"]


def test_sustained_rate_stops_at_the_first_missed_point() -> None:
    def point(rate: int, p99: float | None, non_2xx: int = 0) -> dict:
        return {"offered_rate": rate, "p99_ms": p99, "non_2xx": non_2xx, "unfinished": 0}

    sweep = {"open_loop": [point(400, 12.0), point(100, 2.0), point(200, 3.0), point(700, 4.0)]}
    assert sustained_rate(sweep, 10.0) == 200
    assert sustained_rate({"open_loop": [point(100, 2.0, non_2xx=1)]}, 10.0) == 0
    assert sustained_rate({"open_loop": [point(100, None)]}, 10.0) == 0


def test_targets_when_no_peer_meets_the_slo() -> None:
    out = targets({"fr": _result(500, 1.0), "ray": _result(0, 3.0)}, ["fr"], ["ray"])
    assert out["max_rate_within_slo_vs_best_peer"]["value"] is None
    assert out["max_rate_within_slo_vs_best_peer"]["met"] is True


def test_peer_requirements_are_the_peers_extra_plus_numpy() -> None:
    requirements = peer_requirements(REPO / "pyproject.toml")
    assert {r.split("==")[0] for r in requirements} == {"ray[serve]", "bentoml", "litserve", "kserve", "numpy"}
    assert f"numpy=={metadata.version('numpy')}" in requirements
    assert all("==" in r for r in requirements)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    point = {"offered_rate": 100, "p99_ms": 3.0, "non_2xx": 0, "unfinished": 0}
    report = {"servers": {"freshrec int8 x1 worker": {**_result(100, 0.4), "open_loop": [point]},
                          "litserve": {**_result(0, 2.0), "open_loop": [{**point, "p99_ms": 30.0}]}},
              "slo_p99_ms": 10.0, "model_version": "1", "cpu_count": 2, "load_average_before": (0.5, 0.5, 0.5)}
    assert plot(report, tmp_path / "peers.png").stat().st_size > 10_000


def _peers_venv() -> Path:
    """Kept between test runs (building it downloads several hundred MB): tests/conftest.py strips FRESHREC_*,
    so the cache follows XDG_CACHE_HOME like the ML-100K one."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "freshrec" / "peers-venv"


@pytest.mark.slow
def test_bench_peers_report(world: World, champion: str) -> None:  # noqa: F811
    try:
        ensure_peers_venv(_peers_venv(), peer_requirements(REPO / "pyproject.toml"))
    except StageFailed as exc:
        pytest.skip(f"the peers venv cannot be built here (no PyPI?): {str(exc)[:300]}")
    path = run(world.settings, rates=[50], duration_s=0.5, peers=["litserve"], sample_users=20, venv=_peers_venv())
    report = json.loads(path.read_text())
    assert path.with_suffix(".png").stat().st_size > 10_000
    assert set(report["servers"]) == {"freshrec int8 x1 worker", "freshrec int8 x2 workers", "litserve"}
    for name, check in report["answers_equal_freshrec"].items():
        assert check["equal"] == check["users_checked"] == 21, (name, check["mismatches"])
    for result in report["servers"].values():
        assert result["single_stream"]["requests"] > 0 and result["single_stream"]["non_2xx"] == 0
        assert result["sustained_rate_within_slo"] <= result["max_rate_within_slo"]
    assert set(report["targets"]) == {"max_rate_within_slo_vs_best_peer", "single_stream_p50_vs_best_peer"}
    assert report["configs"]["litserve"]["LitAPI"]["api_path"] == "/v1/recommend"
