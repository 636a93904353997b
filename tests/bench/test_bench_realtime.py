"""``freshrec bench realtime``: the replay's metrics, the session world, the report, and one tiny end-to-end run."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from freshrec.tools.bench import prequential as pq
from freshrec.tools.bench.realtime import RealtimeConfig, merge_targets, plot, quality_targets, resolve_stores
from freshrec.tools.data.synth import SynthConfig, synthesize
from freshrec.tools.data.world import make_world

START = dt.date(2026, 1, 5)
SESSION_WORLD = dict(users=600, items=300, events_per_day=6000, seed=5, session_intent=16.0, initial_share=0.5,
                     growth_days=8.0, newcomer_boost=3.0)


def _events(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """(user, item, ts) rows as raw view events."""
    return pd.DataFrame([{"user_id": u, "item_id": i, "event_type": "view", "value": 1.0, "ts": ts} for u, i, ts in rows])


class Scripted:
    """A recommender that answers fixed lists per user and records what it was told."""

    def __init__(self, lists: dict[str, list[str]]) -> None:
        self.lists, self.observed = lists, []

    def recommend(self, user_id: str, k: int) -> list[str]:
        return self.lists.get(user_id, [])[:k]

    def observe(self, event: dict) -> None:
        self.observed.append(event["event_id"])


# ---- the replay ---------------------------------------------------------------------------------
def test_targets_ranks_and_metrics_on_a_hand_made_replay() -> None:
    held = _events([
        ("a", "x", "2026-01-08T10:00:05Z"),
        ("a", "y", "2026-01-08T10:00:01Z"),   # earlier: replayed first
        ("a", "x", "2026-01-08T10:01:00Z"),   # a repeat: not a target
        ("a", "old", "2026-01-08T10:02:00Z"),  # the user had it in training: not a target
        ("a", "unknown", "2026-01-08T10:03:00Z"),  # the model does not know the item: not a target
        ("n", "x", "2026-01-08T11:00:00Z"),   # a new user
    ])
    ordered = pq.replay_order(held, None, seed=0)
    assert ordered["item_id"].tolist() == ["y", "x", "x", "old", "unknown", "x"]
    plan = pq.build_replay(ordered, {("a", "old")}, known_users={"a"}, known_items={"x", "y", "old"}, event_id_prefix="t-")
    assert plan.targets.tolist() == [True, True, False, False, False, True]
    assert plan.target_known_user.tolist() == [True, True, False]
    assert [e["event_id"] for e in plan.events] == [f"t-{i}" for i in range(6)]

    recommender = Scripted({"a": ["q", "x", "r"], "n": ["x"]})  # a: y missed, x at rank 2; n: x at rank 1
    ranks = pq.replay(plan, recommender)
    assert ranks.tolist() == [0, 2, 1]
    assert recommender.observed == [f"t-{i}" for i in range(6)]  # every event, targets or not
    summary = pq.summarise(ranks, plan.target_known_user)
    assert summary["known"] == {"targets": 2, "hr@10": 0.5, "ndcg@10": pytest.approx(0.5 / np.log2(3))}
    assert summary["new"] == {"targets": 1, "hr@10": 1.0, "ndcg@10": 1.0}
    assert summary["all"]["hr@10"] == pytest.approx(2 / 3)
    assert pq.rank_of(["a", "b"], "b", k=1) == 0


def test_the_event_cap_keeps_whole_users() -> None:
    rows = [(f"u{u}", f"i{e}", f"2026-01-08T10:{e:02d}:{u:02d}Z") for u in range(20) for e in range(5)]
    ordered = pq.replay_order(_events(rows), max_events=23, seed=1)
    assert len(ordered) == 20 and ordered.groupby("user_id").size().eq(5).all()
    assert pd.to_datetime(ordered["ts"]).is_monotonic_increasing
    assert pq.replay_order(_events(rows), max_events=23, seed=1).equals(ordered)
    assert len(pq.replay_order(_events(rows), max_events=2, seed=1)) == 5  # at least one user


def test_paired_intervals_resample_users() -> None:
    users = np.array(["a"] * 8 + ["b"] * 2, dtype=object)
    same = pq.paired_user_bootstrap(np.ones(10), np.ones(10), users)
    assert same == {"mean_diff": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "targets": 10, "users": 2}
    # a wins all 8 of its targets, b loses both: with two users the interval spans both of them
    a, b = np.r_[np.ones(8), np.zeros(2)], np.r_[np.zeros(8), np.ones(2)]
    result = pq.paired_user_bootstrap(a, b, users)
    assert result["mean_diff"] == pytest.approx(0.6) and result["ci95_low"] == -1.0 and result["ci95_high"] == 1.0


def test_ease_fed_live_events_follows_them_and_excludes_what_was_seen() -> None:
    # Two disjoint item groups; user "a" trained on one item of group 1, then turns to group 2 live.
    train = _events([(f"t{u}", i, "2026-01-01T00:00:00Z") for u in range(30) for i in (("p", "q", "r") if u % 2 else ("x", "y", "z"))]
                    + [("a", "p", "2026-01-01T00:00:00Z")])
    histories = pq.TrainingHistories.of(train)
    weights = histories.ease(10.0)
    live, static = histories.recommender(weights, live=True), histories.recommender(weights, live=False)
    for recommender in (live, static):
        for n, item in enumerate("xy"):
            recommender.observe({"user_id": "a", "item_id": item, "event_id": str(n)})
    assert live.recommend("a", 1) == ["z"]                # two live items outweigh one training item
    assert not {"p", "x", "y"} & set(live.recommend("a", 10))
    assert set(static.recommend("a", 2)) == {"q", "r"}    # the training taste only
    assert set(histories.recommender(None, live=False).recommend("new", 6)) == {"p", "q", "r", "x", "y", "z"}


def test_served_client_posts_every_event_before_the_next_request() -> None:
    calls: list[tuple[str, dict]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append((request.url.path, body))
        if request.url.path == "/v1/events":
            return httpx.Response(200, json={"accepted": len(body["events"]) - 1, "rejected": [{"index": 0, "reason": "future_ts"}]})
        return httpx.Response(200, json={"items": [{"item_id": "x", "score": 1.0}], "model_version": "3", "variant": "champion"})

    plan = pq.Replay([{"user_id": "a", "item_id": i, "event_id": str(n)} for n, i in enumerate("xyz")],
                     np.array([True, False, True]), np.array([True, True, True]))
    for post in (True, False):
        calls.clear()
        with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://bench") as client:
            live = pq.ServedRecommender(client, post_events=post)
            assert pq.replay(plan, live).tolist() == [1, 0]
            live.flush()
        paths = [path for path, _ in calls]
        if post:
            assert paths == ["/v1/recommend", "/v1/events", "/v1/recommend", "/v1/events"]
            assert [e["event_id"] for e in calls[1][1]["events"]] == ["0", "1"]
            assert live.accepted == 1 and live.rejected == {"future_ts": 2}
        else:
            assert paths == ["/v1/recommend", "/v1/recommend"] and live.accepted == 0
        assert calls[0][1] == {"user_id": "a", "k": 10, "exclude_seen": True} and live.model_versions == {"3"}


# ---- the session world --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def session_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthConfig]:
    config = SynthConfig(out=tmp_path_factory.mktemp("sessions") / "events", start=START, days=5, **SESSION_WORLD)
    list(synthesize(config))
    return config.out, config


def _read(root: Path) -> pd.DataFrame:
    files = sorted(root.glob("ds=*/*.parquet"))
    return pd.concat([pd.read_parquet(f).assign(day=(dt.date.fromisoformat(f.parent.name[3:]) - START).days) for f in files],
                     ignore_index=True)


def _consecutive_views(events: pd.DataFrame, within_s: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, previous item, item, day) of views that follow the same user's previous view within minutes."""
    views = events[events.event_type == "view"].assign(t=lambda f: pd.to_datetime(f.ts, utc=True))
    views = views.sort_values(["user_id", "t"], kind="stable")
    users, items = views.user_id.to_numpy(), views.item_id.to_numpy()
    gap = np.diff(views.t.to_numpy()).astype("timedelta64[s]").astype(np.int64)
    close = (users[1:] == users[:-1]) & (gap <= within_s)
    return users[1:][close], items[:-1][close], items[1:][close], views.day.to_numpy()[1:][close]


def test_a_view_minutes_ago_predicts_the_next_better_than_lasting_taste(session_world: tuple[Path, SynthConfig]) -> None:
    root, config = session_world
    world = make_world(config.world_config())
    users, previous, current, days = _consecutive_views(_read(root))
    u, prev, cur = world.user_index(users), world.item_index(previous), world.item_index(current)
    logpop = np.stack([world.item_log_popularity(t) for t in range(config.days)])[days]

    def hit_rate(scores: np.ndarray) -> float:
        return float((np.argsort(-scores, axis=1)[:, :10] == cur[:, None]).any(axis=1).mean())

    # The oracle of lasting taste (the true taste and popularity) vs the item viewed just before.
    taste = world.config.preference_strength * np.einsum("nd,md->nm", world.user_vectors(2, u), world.item_vectors) + logpop
    recent = 10 * world.item_vectors[prev] @ world.item_vectors.T + logpop
    assert len(cur) > 2000
    assert hit_rate(recent) > 1.2 * hit_rate(taste)
    # Within a session, items sit closer to each other than to the user's lasting taste.
    unit_taste = world.user_vectors(2, u) / np.linalg.norm(world.user_vectors(2, u), axis=1, keepdims=True)
    vectors = world.item_vectors
    assert np.mean(np.sum(vectors[prev] * vectors[cur], 1)) > np.mean(np.sum(unit_taste * vectors[cur], 1)) + 0.2


def test_without_sessions_consecutive_views_are_not_clustered(tmp_path: Path) -> None:
    config = SynthConfig(out=tmp_path, start=START, days=2, **{**SESSION_WORLD, "session_intent": 0.0})
    list(synthesize(config))
    world = make_world(config.world_config())
    _, previous, current, _ = _consecutive_views(_read(tmp_path))
    similarity = np.sum(world.item_vectors[world.item_index(previous)] * world.item_vectors[world.item_index(current)], 1)
    assert similarity.mean() < 0.6


def test_later_days_bring_new_users(session_world: tuple[Path, SynthConfig]) -> None:
    events = _read(session_world[0])
    first_day = events.groupby("user_id").day.min()
    later = events[events.day >= 3]
    share_new = later.user_id.map(first_day).ge(3).mean()
    assert share_new > 0.05, share_new
    assert first_day.ge(1).sum() > 30


def test_session_world_is_byte_identical_per_seed_and_day(tmp_path: Path, session_world: tuple[Path, SynthConfig]) -> None:
    root, config = session_world
    list(synthesize(SynthConfig(out=tmp_path / "again", start=START, days=2, **SESSION_WORLD)))
    for day in ("ds=2026-01-05", "ds=2026-01-06"):
        assert (tmp_path / "again" / day / "part-00000.parquet").read_bytes() == (root / day / "part-00000.parquet").read_bytes()
    list(synthesize(SynthConfig(out=tmp_path / "other", start=START, days=1, **{**SESSION_WORLD, "seed": 6})))
    part = Path("ds=2026-01-05") / "part-00000.parquet"
    assert (tmp_path / "other" / part).read_bytes() != (root / part).read_bytes()


# ---- the report ---------------------------------------------------------------------------------
def test_store_choice() -> None:
    assert resolve_stores("auto", redis_up=True) == [("redis", "redis://127.0.0.1:6379/0")]
    assert resolve_stores("auto", redis_up=False) == [("embedded", None)]
    assert [name for name, _ in resolve_stores("both", redis_up=True)] == ["redis", "embedded"]
    with pytest.raises(Exception, match="6379"):
        resolve_stores("redis", redis_up=False)
    with pytest.raises(Exception, match="parts"):
        RealtimeConfig(parts=("quality", "speed"))
    with pytest.raises(Exception, match="train-days"):
        RealtimeConfig(days=3, train_days=3)


def _quality(static: float, realtime: float, ease: float) -> dict:
    def modes(value: float) -> dict:
        return {g: {"targets": 10, "hr@10": value, "ndcg@10": value / 2} for g in ("known", "new", "all")}

    return {"replay": {"events": 100, "targets": {"known": 10, "new": 10}},
            "modes": {"static": modes(static), "realtime": modes(realtime), "ease_realtime": modes(ease),
                      "ease_static": modes(static), "popularity": modes(0.05)}}


def test_targets_merge_and_plot(tmp_path: Path) -> None:
    quality = _quality(static=0.10, realtime=0.13, ease=0.12)
    quality["targets"] = quality_targets(quality)
    assert quality["targets"]["realtime_over_static_hr@10_known"] == {"value": 1.3, "target": 1.25, "met": True}
    assert quality["targets"]["realtime_over_ease_realtime_hr@10_new"]["met"]
    assert not quality_targets(_quality(static=0.10, realtime=0.12, ease=0.13))["realtime_over_static_hr@10_known"]["met"]
    report = {"quality": quality,
              "ops": {"redis": {"ingestion": {"targets": {"events_per_s": {"value": 5000.0, "target": 2000, "met": True}}}}},
              "durability": {"targets": {"lost_events": {"value": 0, "target": 0, "met": True}}}}
    report["targets"] = merge_targets(report)
    assert set(report["targets"]) == {"quality.realtime_over_static_hr@10_known", "quality.realtime_over_ease_realtime_hr@10_known",
                                      "quality.realtime_over_ease_realtime_hr@10_new", "ingestion@redis.events_per_s",
                                      "durability.lost_events"}
    assert plot(report, tmp_path / "r.png").stat().st_size > 10_000


# ---- end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_realtime_quality_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env["FRESHREC_HOME"] = str(tmp_path / "home")
    freshrec = Path(sys.executable).with_name("freshrec")
    result = subprocess.run(
        [str(freshrec), "bench", "realtime", "--parts", "quality", "--days", "3", "--train-days", "2", "--users", "300",
         "--items", "150", "--events-per-day", "4000", "--max-events", "2500", "--seed", "3"],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "home" / "reports" / "bench"
    report = json.loads((folder / "realtime.json").read_text())
    assert (folder / "realtime.png").stat().st_size > 10_000
    quality = report["quality"]
    assert set(quality["modes"]) == {"static", "realtime", "ease_realtime", "ease_static", "popularity"}
    assert quality["replay"]["targets"]["known"] > 100 and quality["replay"]["targets"]["new"] > 0
    assert quality["served"]["realtime"]["events_accepted"] == quality["replay"]["events"]
    assert quality["served"]["static"]["events_accepted"] == 0
    assert set(report["targets"]) == {f"quality.{name}" for name in quality["targets"]}
    assert all(set(t) == {"value", "target", "met"} for t in report["targets"].values())
    known = {mode: quality["modes"][mode]["known"]["hr@10"] for mode in ("static", "realtime")}
    assert known["realtime"] > known["static"], known
    assert not list((tmp_path / "home").glob("realtime-*"))  # the scratch home is removed
