"""The synthetic generator: determinism, schema, funnel, seasonality and a learnable signal."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from freshrec.core.errors import InvalidInput, NotFound
from freshrec.core.schemas import EVENT_TYPES, RAW_COLUMNS
from freshrec.tools.data.synth import SynthConfig, synthesize
from freshrec.tools.data.world import GENRES, WorldConfig, load_world, make_world, save_world

START = dt.date(2026, 1, 5)  # a Monday
SMALL = dict(users=300, items=150, events_per_day=3000)


def _synth(out: Path, days: int = 3, seed: int = 11, **kw) -> list:
    return list(synthesize(SynthConfig(out=out, start=START, days=days, seed=seed, **{**SMALL, **kw})))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _events(root: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(p).assign(day=p.parent.name[3:]) for p in sorted(root.glob("ds=*/*.parquet"))]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Eight days of a small world plus its ground truth (shared by the read-only tests)."""
    root = tmp_path_factory.mktemp("synth-week")
    config = SynthConfig(out=root / "events", start=START, days=8, seed=3, users=600, items=300, events_per_day=6000)
    world = make_world(config.world_config())
    truth = save_world(world, root / "truth.npz")
    list(synthesize(config, world))
    return root / "events", truth


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    _synth(tmp_path / "a")
    _synth(tmp_path / "b")
    _synth(tmp_path / "c", seed=12)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert list(a) == ["_meta/items.parquet", "_meta/users.parquet",
                       "ds=2026-01-05/part-00000.parquet", "ds=2026-01-06/part-00000.parquet", "ds=2026-01-07/part-00000.parquet"]
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[name] != c[name] for name in a if name.startswith("ds="))


def test_a_day_does_not_depend_on_the_range_it_was_generated_in(tmp_path: Path) -> None:
    _synth(tmp_path / "short", days=2)
    _synth(tmp_path / "long", days=4)
    short, long = _files(tmp_path / "short"), _files(tmp_path / "long")
    assert all(long[name] == data for name, data in short.items())


@pytest.mark.slow
def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    list(synthesize(SynthConfig(out=tmp_path / "one", start=START, days=3, seed=2, **SMALL)))
    reports = list(synthesize(SynthConfig(out=tmp_path / "two", start=START, days=3, seed=2, **SMALL), workers=2))
    assert [r.day for r in reports] == [START + dt.timedelta(days=t) for t in range(3)]
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


def test_rerun_replaces_days_instead_of_adding_files(tmp_path: Path) -> None:
    list(synthesize(SynthConfig(out=tmp_path, start=START, days=2, seed=1, fmt="csv", **SMALL)))
    list(synthesize(SynthConfig(out=tmp_path, start=START, days=2, seed=1, fmt="parquet", **SMALL)))
    for day in ("ds=2026-01-05", "ds=2026-01-06"):
        assert sorted(p.name for p in (tmp_path / day).iterdir()) == ["part-00000.parquet"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("_") and p.name != "_meta"]


def test_schema_and_value_rules(week: tuple[Path, Path]) -> None:
    events = _events(week[0])
    table = pq.read_table(next(week[0].glob("ds=*/*.parquet")))
    assert tuple(table.column_names) == RAW_COLUMNS
    assert [str(t) for t in table.schema.types] == ["string", "string", "string", "double", "string"]
    assert set(events.event_type) == set(EVENT_TYPES)
    ts = pd.to_datetime(events.ts, format="%Y-%m-%dT%H:%M:%SZ", utc=True)
    assert (ts.dt.strftime("%Y-%m-%d") == events.day).all(), "every event lies in its ds day"
    assert (events.loc[events.event_type.isin(["view", "click"]), "value"] == 1.0).all()
    stars = events.loc[events.event_type == "rating", "value"]
    assert stars.between(1, 5).all() and (stars == stars.round()).all() and stars.nunique() == 5
    assert (events.loc[events.event_type == "purchase", "value"] > 0).all()
    assert events.user_id.str.fullmatch(r"u\d+").all() and events.item_id.str.fullmatch(r"i\d+").all()
    per_day = events.groupby("day").size()
    assert per_day.between(6000 * 0.7, 6000 * 1.3).all(), per_day


def test_funnel_clicks_follow_views(week: tuple[Path, Path]) -> None:
    events = _events(week[0])
    counts = events.groupby(["user_id", "item_id", "event_type"]).size().unstack(fill_value=0)
    assert (counts["click"] <= counts["view"]).all()
    assert (counts["rating"] + counts["purchase"] <= 2 * counts["click"]).all()
    kinds = events.event_type.value_counts()
    assert kinds["view"] > kinds["click"] > max(kinds["rating"], kinds["purchase"])


def test_seasonality_evening_peak_and_weekend_volume(week: tuple[Path, Path]) -> None:
    events = _events(week[0])
    hours = pd.to_datetime(events.ts, utc=True).dt.hour.value_counts().sort_index()
    assert hours.loc[18:22].sum() > 2.5 * hours.loc[2:6].sum()
    per_day = events.groupby("day").size()
    weekend, weekdays = per_day[["2026-01-10", "2026-01-11"]].mean(), per_day[["2026-01-05", "2026-01-06", "2026-01-07"]].mean()
    assert weekend > weekdays


def test_heavy_tails_and_newcomers(week: tuple[Path, Path]) -> None:
    events, world = _events(week[0]), load_world(week[1])
    views = events[events.event_type == "view"]
    item_counts = views.item_id.value_counts()
    assert item_counts.iloc[: len(item_counts) // 10].sum() > 0.4 * len(views), "top 10% of items hold most views"
    user_counts = events.user_id.value_counts()
    assert user_counts.iloc[: len(user_counts) // 10].sum() > 0.3 * len(events), "top 10% of users are heavy"
    # Items and users appear only from their birth day on, and some are born during the week.
    day_index = (pd.to_datetime(events.day) - pd.Timestamp(START)).dt.days.to_numpy()
    assert (world.item_birth[world.item_index(events.item_id.to_numpy())] <= day_index).all()
    assert (world.user_birth[world.user_index(events.user_id.to_numpy())] <= day_index).all()
    late_items = events.loc[world.item_birth[world.item_index(events.item_id.to_numpy())] > 0, "day"]
    assert late_items.nunique() >= 1 and late_items.min() > START.isoformat()


def test_events_carry_the_truth_signal(week: tuple[Path, Path]) -> None:
    """Ranking by the hidden affinity beats ranking by popularity on the last day's clicks."""
    events, world = _events(week[0]), load_world(week[1])
    t = 7
    train, test = events[events.day < "2026-01-12"], events[(events.day == "2026-01-12") & (events.event_type == "click")]
    popular = set(train.item_id.value_counts().index[:10])
    users = test.user_id.unique()
    scores = world.config.preference_strength * world.user_vectors(t, world.user_index(users)) @ world.item_vectors.T
    scores += world.item_log_popularity(t)
    top = world.item_ids[np.argsort(-scores, axis=1)[:, :10]]
    clicked = test.groupby("user_id").item_id.apply(set)
    oracle_hits = sum(len(set(top[k]) & clicked[u]) for k, u in enumerate(users))
    popular_hits = sum(len(popular & clicked[u]) for u in users)
    assert oracle_hits > 1.3 * popular_hits > 0
    # Within what was viewed, clicked pairs have a higher affinity than pairs only viewed (taste at
    # mid-week: it barely drifts within a week).
    affinity = world.affinity(world.user_index(events.user_id.to_numpy()), world.item_index(events.item_id.to_numpy()), 4)
    pairs = events.assign(affinity=affinity).groupby(["user_id", "item_id"])
    clicked_any = pairs.event_type.apply(lambda kinds: (kinds == "click").any())
    mean_affinity = pairs.affinity.first()
    assert mean_affinity[clicked_any].mean() > mean_affinity[~clicked_any].mean() + 0.05


def test_truth_loader_api(week: tuple[Path, Path]) -> None:
    world = load_world(week[1])
    assert world.config.start_date == START
    p = world.click_probability("u1", "i1", START)
    assert isinstance(p, float) and 0 <= p <= 1
    many = world.click_probability(["u1", "u2", "u3"], ["i1", "i2", "i3"], 2)
    assert many.shape == (3,) and ((many >= 0) & (many <= 1)).all()
    unborn = int(np.argmax(world.item_birth))
    assert world.click_probability("u1", world.item_ids[unborn], 0) == 0.0
    sampled = world.sample_users(500, START + dt.timedelta(days=2), np.random.default_rng(0))
    assert (world.user_birth[world.user_index(sampled)] <= 2).all()
    # Taste drifts slowly: close after a week, clearly different after half a year.
    def similarity(t: int) -> float:
        a, b = world.user_vectors(0), world.user_vectors(t)
        return float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))
    assert similarity(7) > 0.98 and similarity(180) < 0.5
    assert {g for genres in world.item_genres() for g in genres} <= set(GENRES)
    with pytest.raises(InvalidInput):
        world.click_probability("u999999", "i1", 0)
    with pytest.raises(InvalidInput):
        world.click_probability("42", "i1", 0)
    with pytest.raises(NotFound):
        load_world(week[1].with_name("missing.npz"))


def test_truth_roundtrip_keeps_every_array(tmp_path: Path) -> None:
    world = make_world(WorldConfig(users=50, items=40, seed=5))
    loaded = load_world(save_world(world, tmp_path / "truth"))
    assert loaded.config == world.config
    assert np.array_equal(loaded.user_base, world.user_base) and np.array_equal(loaded.item_birth, world.item_birth)


def test_csv_and_jsonl_hold_the_same_events_as_parquet(tmp_path: Path) -> None:
    frames = {}
    for fmt in ("parquet", "csv", "jsonl"):
        _synth(tmp_path / fmt, days=1, fmt=fmt)
        path = next((tmp_path / fmt).glob(f"ds=*/part-00000.{fmt}"))
        frames[fmt] = {"parquet": pd.read_parquet, "csv": pd.read_csv, "jsonl": lambda p: pd.read_json(p, lines=True)}[fmt](path)
    assert list(frames["csv"].columns) == list(RAW_COLUMNS)
    for fmt in ("csv", "jsonl"):
        pd.testing.assert_frame_equal(frames[fmt].astype({"user_id": str, "item_id": str, "ts": str}), frames["parquet"])


def test_cli_writes_one_folder_per_day_and_the_truth(tmp_path: Path) -> None:
    freshrec = Path(sys.executable).with_name("freshrec")
    result = subprocess.run(
        [str(freshrec), "data", "synth", "--out", str(tmp_path / "x"), "--start", "2026-01-01", "--days", "3", "--seed", "7",
         "--users", "200", "--items", "100", "--events-per-day", "1000", "--truth", str(tmp_path / "truth.npz"), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "x").glob("ds=*")) == ["ds=2026-01-01", "ds=2026-01-02", "ds=2026-01-03"]
    assert (tmp_path / "truth.npz").is_file() and (tmp_path / "x" / "_meta" / "items.parquet").is_file()
    assert "events/s" in result.stdout


def test_cli_rejects_a_bad_date_or_format(tmp_path: Path) -> None:
    from freshrec.cli.data import app

    for option, value in (("--start", "01/02/2026"), ("--format", "xml")):
        args = ["synth", "--out", str(tmp_path), "--start", "2026-01-01", "--days", "1", option, value]
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, InvalidInput), result.output
    assert not list(tmp_path.glob("ds=*"))


def test_item_metadata_has_genres_for_every_item(week: tuple[Path, Path]) -> None:
    items = pd.read_parquet(week[0] / "_meta" / "items.parquet")
    assert len(items) == 300 and items.item_id.is_unique
    assert items.categories.map(len).ge(1).all()
    assert set(np.concatenate(items.categories.to_numpy())) <= set(GENRES)


def test_taste_drift_makes_fresh_knowledge_worth_more() -> None:
    """Share of a user's true choice probability captured by a top-10 built from taste of day t - gap."""
    world = make_world(WorldConfig(users=600, items=300, seed=3))
    t = 90
    logpop = world.item_log_popularity(t)
    true = world.config.preference_strength * world.user_vectors(t) @ world.item_vectors.T + logpop
    choice = np.exp(true - true.max(axis=1, keepdims=True))
    choice /= choice.sum(axis=1, keepdims=True)

    def captured(gap: int) -> float:
        model = world.config.preference_strength * world.user_vectors(t - gap) @ world.item_vectors.T + logpop
        return float(np.take_along_axis(choice, np.argsort(-model, axis=1)[:, :10], axis=1).sum(axis=1).mean())

    fresh, week, month, two_months = captured(0), captured(7), captured(30), captured(60)
    assert fresh >= week > month > two_months
    assert week > 0.98 * fresh and two_months < 0.85 * fresh


@pytest.mark.parametrize(("users", "items", "events"), [(1, 1, 50), (3, 2, 50), (20, 10, 0)])
def test_tiny_worlds_and_empty_days_still_write_valid_partitions(tmp_path: Path, users: int, items: int, events: int) -> None:
    reports = list(synthesize(SynthConfig(out=tmp_path, start=START, days=2, users=users, items=items, events_per_day=events)))
    assert [r.rows > 0 for r in reports] == [events > 0] * 2
    for report in reports:
        assert pq.read_table(report.path / "part-00000.parquet").num_rows == report.rows


def test_cli_session_and_newcomer_knobs_reach_the_world(tmp_path: Path) -> None:
    from freshrec.cli.data import app

    args = ["synth", "--out", str(tmp_path / "s"), "--start", "2026-01-05", "--days", "1", "--users", "200", "--items", "100",
            "--events-per-day", "1000", "--session-intent", "16", "--initial-share", "0.5", "--growth-days", "8",
            "--newcomer-boost", "3", "--truth", str(tmp_path / "truth.npz"), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = load_world(tmp_path / "truth.npz").config
    assert (config.session_intent, config.initial_share, config.growth_days, config.newcomer_boost) == (16.0, 0.5, 8.0, 3.0)
    plain = _synth(tmp_path / "plain", days=1, seed=42, users=200, items=100, events_per_day=1000)
    session_part = tmp_path / "s" / "ds=2026-01-05" / "part-00000.parquet"
    assert plain[0].path.joinpath("part-00000.parquet").read_bytes() != session_part.read_bytes()


def test_truth_files_written_before_the_session_knobs_still_load(tmp_path: Path) -> None:
    path = save_world(make_world(WorldConfig(users=30, items=20, seed=2)), tmp_path / "truth.npz")
    with np.load(path) as data:
        older = {k: data[k] for k in data.files if k not in ("config_session_intent", "config_newcomer_boost")}
    np.savez_compressed(path, **older)
    config = load_world(path).config
    assert config.session_intent == 0.0 and config.newcomer_boost == 0.0 and config.users == 30


def test_newcomers_are_busier_on_their_first_days_only_with_the_boost() -> None:
    calm, eager = (make_world(WorldConfig(users=400, items=50, seed=4, newcomer_boost=boost)) for boost in (0.0, 3.0))
    t = 10
    born_today = np.flatnonzero(calm.user_birth == t)
    veterans = np.flatnonzero(calm.user_birth == 0)
    assert np.array_equal(calm.user_weights(t, veterans), calm.user_activity[veterans])
    assert np.allclose(eager.user_weights(t, born_today), 4 * eager.user_activity[born_today])
    assert np.allclose(eager.user_weights(60, veterans), eager.user_activity[veterans], rtol=1e-4)  # the boost fades


SEQUENTIAL_WORLD = dict(users=300, items=200, events_per_day=3000, session_intent=1.5, transition_share=0.5, repeat_share=0.15)


def _sequential_metrics(events: pd.DataFrame) -> dict[str, dict]:
    """HR@10 / nDCG@10 of an order-aware (last item -> most frequent successor) and an order-blind (co-occurrence
    pooled over the whole history) baseline on the ``sequential`` protocol."""
    from freshrec.pipeline.evaluation import baselines
    from freshrec.pipeline.evaluation.evaluate import evaluate_scorer
    from freshrec.pipeline.training.dataset import normalise_interactions
    from freshrec.pipeline.training.protocols import prepare

    data = prepare(normalise_interactions(events), "sequential", 7, 50, 42, lambda v: np.zeros((v.n_items + 1, 1), np.float32))
    histories, n = list(data.train.values()), data.vocab.n_items
    return {name: evaluate_scorer(scorer(histories, n), data.test, n)["overall"]
            for name, scorer in (("markov", baselines.markov), ("cooccurrence", baselines.cooccurrence))}


def test_sequential_structure_makes_order_matter(tmp_path: Path) -> None:
    """On a world with intents, item-to-item transitions and repeats, the next item follows from the last one: an
    order-aware baseline beats an order-blind one by a clear margin; with each user's event times shuffled (the same
    items, the order destroyed) it no longer does."""
    _synth(tmp_path, days=6, seed=5, **SEQUENTIAL_WORLD)
    events = _events(tmp_path)
    ordered = _sequential_metrics(events)
    rng = np.random.default_rng(0)
    shuffled_events = events.assign(ts=events.groupby("user_id")["ts"].transform(lambda ts: rng.permutation(ts.to_numpy())))
    shuffled = _sequential_metrics(shuffled_events)
    assert ordered["markov"]["users"] >= 150
    for metric in ("hr@10", "ndcg@10"):
        assert ordered["markov"][metric] > 1.5 * ordered["cooccurrence"][metric], ordered
        assert shuffled["markov"][metric] < 1.1 * shuffled["cooccurrence"][metric], shuffled
        assert ordered["markov"][metric] > 1.5 * shuffled["markov"][metric]


def test_transitions_and_repeats_show_in_the_sessions(tmp_path: Path) -> None:
    _synth(tmp_path / "chain", days=1, seed=5, **SEQUENTIAL_WORLD)
    views = _events(tmp_path / "chain").query("event_type == 'view'").sort_values(["user_id", "ts"], kind="stable")
    world = make_world(SynthConfig(out=tmp_path, start=START, days=1, seed=5, **SEQUENTIAL_WORLD).world_config())
    items = world.item_index(views.item_id.to_numpy())
    same_user = views.user_id.to_numpy()[1:] == views.user_id.to_numpy()[:-1]
    follows = (world.successors[items[:-1]] == items[1:, None]).any(axis=1)
    assert follows[same_user].mean() > 0.25  # about half of a session's later views, less the sessions' first views
    repeats = views.duplicated(["user_id", "item_id"]).mean()
    _synth(tmp_path / "no-repeats", days=1, seed=5, **{**SEQUENTIAL_WORLD, "repeat_share": 0.0})
    no_repeats = _events(tmp_path / "no-repeats").query("event_type == 'view'")
    assert repeats > no_repeats.duplicated(["user_id", "item_id"]).mean() + 0.05
    with pytest.raises(InvalidInput):
        WorldConfig(transition_share=0.7, repeat_share=0.4)
