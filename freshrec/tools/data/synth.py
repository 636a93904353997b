"""Synthetic raw events with a known ground truth (``freshrec data synth``).

Events are drawn from a ``World`` (freshrec.tools.data.world): each view picks an item by popularity times
taste, then a funnel view -> click -> rating / purchase follows from the user's affinity for it.
Volume follows a weekly cycle and timestamps a daily one. With sessions (``session_intent`` > 0) the
views come in runs of a few minutes per user, each around a short-lived intent (see world.py).

Each day has its own random generator seeded from (seed, day index) and the world does not depend on
the number of days, so for one start date a day's file is the same whichever range it was generated in
(asking for more days extends a lake without changing the days already there; day indices count from
the start, so another start is another history), and the same seed always gives byte-identical files.
A day is produced hour by hour and streamed to disk, so memory stays flat however many events are
asked for; independent days also let several worker processes generate them in parallel with the
same result.

The ground-truth loader the traffic simulator uses is re-exported here: ``load_world(path)`` returns a
``World`` with ``click_probability(user_id, item_id, day)`` and ``sample_users(n, day, rng)``.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from freshrec.core.layout import ds_name
from freshrec.pipeline.data.partitions import PART_NAME, FileFormat, check_format, replace_partition, staging_dir, write_event_file
from freshrec.tools.data.world import DAY_STREAM, SUCCESSOR_P, World, WorldConfig, load_world, make_world, save_world

__all__ = ["EVENT_SCHEMA", "SynthConfig", "DayReport", "generate_day", "synthesize", "load_world", "save_world", "World"]

EVENT_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("item_id", pa.string()), ("event_type", pa.string()), ("value", pa.float64()),
    ("ts", pa.string()),
])

# Monday..Sunday volume factors, and the share of a day's events in each UTC hour (evening peak,
# a smaller lunch peak, a quiet night).
WEEKDAY_VOLUME = np.array([0.94, 0.92, 0.95, 0.98, 1.05, 1.12, 1.04])
_HOURS = np.arange(24) + 0.5
HOURLY_SHARE = 0.15 + np.exp(-(((_HOURS - 20.5) / 3.0) ** 2)) + 0.45 * np.exp(-(((_HOURS - 12.5) / 1.8) ** 2))
HOURLY_SHARE = HOURLY_SHARE / HOURLY_SHARE.sum()

# Funnel: P(rating | click); purchases follow affinity. EVENTS_PER_VIEW turns an events target into
# a number of views (measured on the default world; the realised count varies by a few percent).
RATING_SHARE = 0.35
EVENTS_PER_VIEW = 1.6
_BLOCK = 4096  # views scored at once: bounds the (views x candidates x dim) temporary


@dataclass(frozen=True)
class SynthConfig:
    out: Path
    start: dt.date
    days: int
    users: int = 2000
    items: int = 1000
    events_per_day: int = 20_000
    seed: int = 42
    fmt: FileFormat = "parquet"
    candidates: int = 64  # popularity-drawn candidates per view, re-weighted by taste
    # World knobs (freshrec.tools.data.world.WorldConfig); the defaults are the original world.
    session_intent: float = 0.0
    initial_share: float = 0.7
    growth_days: float = 20.0
    newcomer_boost: float = 0.0
    transition_share: float = 0.0
    repeat_share: float = 0.0

    def world_config(self) -> WorldConfig:
        return WorldConfig(users=self.users, items=self.items, seed=self.seed, start=self.start.isoformat(),
                           session_intent=self.session_intent, initial_share=self.initial_share,
                           growth_days=self.growth_days, newcomer_boost=self.newcomer_boost,
                           transition_share=self.transition_share, repeat_share=self.repeat_share)


@dataclass
class DayReport:
    day: dt.date
    path: Path
    rows: int
    by_type: dict[str, int] = field(default_factory=dict)


def synthesize(config: SynthConfig, world: World | None = None, workers: int = 1) -> Iterator[DayReport]:
    """Write metadata, then one partition per day (each swapped in when complete, in day order), yielding as it goes."""
    check_format(config.fmt)
    world = world or make_world(config.world_config())
    write_metadata(world, config.out)
    with staging_dir(config.out, "synth") as staging:
        if workers <= 1:
            staged_days: Iterable[tuple[int, int, dict[str, int]]] = (
                _stage_day(world, config, t, staging) for t in range(config.days)
            )
            yield from _swap_in(staged_days, config, staging)
            return
        # spawn, not fork: the parent may already run Arrow's thread pools. The world is sent once per worker.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_set_worker_world, initargs=(world,)) as pool:
            staged_days = pool.map(_stage_day_in_worker, [(config, t, staging) for t in range(config.days)])
            yield from _swap_in(staged_days, config, staging)


def _swap_in(staged_days: Iterable[tuple[int, int, dict[str, int]]], config: SynthConfig, staging: Path) -> Iterator[DayReport]:
    for t, rows, counts in staged_days:
        day = config.start + dt.timedelta(days=t)
        target = replace_partition(config.out, day, staging / ds_name(day), staging / "trash")
        yield DayReport(day=day, path=target, rows=rows, by_type=counts)


def _stage_day(world: World, config: SynthConfig, t: int, staging: Path) -> tuple[int, int, dict[str, int]]:
    """Generate day t into ``staging/ds=<day>/``; returns (t, rows, events per type)."""
    day = config.start + dt.timedelta(days=t)
    rng = np.random.default_rng([config.seed, DAY_STREAM, t])
    staged = staging / ds_name(day)
    staged.mkdir()
    counts: Counter[str] = Counter()
    chunks = _counted(generate_day(world, t, config.events_per_day, rng, config.candidates), counts)
    rows = write_event_file(staged / f"{PART_NAME}.{config.fmt}", chunks, config.fmt, EVENT_SCHEMA)
    return t, rows, dict(counts)


_worker_world: World | None = None


def _set_worker_world(world: World) -> None:
    global _worker_world
    _worker_world = world


def _stage_day_in_worker(job: tuple[SynthConfig, int, Path]) -> tuple[int, int, dict[str, int]]:
    assert _worker_world is not None, "worker started without its world"
    return _stage_day(_worker_world, *job)


def generate_day(world: World, t: int, events_target: int, rng: np.random.Generator, candidates: int = 64) -> Iterator[pa.Table]:
    """Events of day index t, one table per hour, each sorted by time."""
    day = world.config.start_date + dt.timedelta(days=t)
    day_start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
    volume = events_target * WEEKDAY_VOLUME[day.weekday()] * np.exp(rng.normal(0.0, 0.05)) / EVENTS_PER_VIEW
    views_per_hour = rng.multinomial(rng.poisson(volume), HOURLY_SHARE)

    active = world.active_users(t)
    user_cdf = _cdf(world.user_weights(t, active))
    item_sampler = _alias_table(np.exp(world.item_log_popularity(t)))  # unborn items have weight 0
    item_vectors = world.item_vectors.astype(np.float32)
    user_ids, item_ids = pa.array(world.user_ids), pa.array(world.item_ids)
    # Every second of the day as ISO text, once: formatting millions of timestamps one by one is slow.
    seconds = np.datetime64(day.isoformat(), "s") + np.arange(86_400).astype("timedelta64[s]")
    ts_texts = pa.array(np.char.add(np.datetime_as_string(seconds, unit="s"), "Z"))
    for hour, n_views in enumerate(views_per_hour):
        if n_views == 0:
            continue
        hour_start = day_start + hour * 3600
        if world.config.sessions:
            users, items, affinity, view_ts = _session_views(world, t, n_views, active, user_cdf, item_vectors, item_sampler,
                                                             candidates, hour_start, rng)
        else:
            users = active[_draw(user_cdf, rng.random(n_views))]
            tastes = world.user_vectors(t, users).astype(np.float32)
            items, affinity = _choose_items(tastes, item_vectors, item_sampler, world.config.preference_strength,
                                            candidates, rng)
            view_ts = hour_start + rng.integers(0, 3600, size=n_views)
        events = _funnel(world, users, items, affinity, np.minimum(view_ts, day_start + 86_399), day_start + 86_399, rng)
        yield _to_table(events, user_ids, item_ids, ts_texts, day_start)


def _session_views(
    world: World, t: int, n_views: int, active: np.ndarray, user_cdf: np.ndarray, item_vectors: np.ndarray,
    item_sampler: tuple[np.ndarray, np.ndarray], candidates: int, hour_start: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n_views views of one hour in sessions; returns (users, items, lasting affinity, view ts).

    Sessions start uniformly in the hour and their views follow at exponential gaps (a session may run
    past the hour; the day's end clamps it like the funnel's later events).
    """
    cfg = world.config
    lengths = _session_lengths(n_views, cfg.session_views, rng)
    owners = active[_draw(user_cdf, rng.random(lengths.size))]
    tastes = world.user_vectors(t, owners).astype(np.float32)
    # The anchor opens the session: an item the user's lasting taste picks, like a view without sessions.
    anchors, _ = _choose_items(tastes, item_vectors, item_sampler, cfg.preference_strength, candidates, rng)
    intents = world.session_intents(anchors, rng)
    pull = cfg.preference_strength * tastes + cfg.session_intent * intents
    follow = lengths - 1
    followers, _ = _choose_items(np.repeat(pull, follow, axis=0), item_vectors, item_sampler, 1.0, candidates, rng)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    is_anchor = np.zeros(n_views, dtype=bool)
    is_anchor[first] = True
    users = np.repeat(owners, lengths)
    items = np.empty(n_views, dtype=np.int64)
    items[is_anchor], items[~is_anchor] = anchors, followers
    if cfg.chained:
        _chain(world, t, items, lengths, first, rng)
    gaps = np.where(is_anchor, 0, np.ceil(rng.exponential(cfg.session_gap_s, n_views))).astype(np.int64)
    offsets = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first], lengths)
    view_ts = np.repeat(hour_start + rng.integers(0, 3600, size=lengths.size), lengths) + offsets
    affinity = world.affinity(users, items, t)
    return users, items, affinity, view_ts


def _chain(world: World, t: int, items: np.ndarray, lengths: np.ndarray, first: np.ndarray, rng: np.random.Generator) -> None:
    """Rewrite the views after each session's first in place, position by position: a repeat of an earlier view
    of the session, a successor of the previous view (when born by day t), or the intent draw already there."""
    cfg = world.config
    n = items.size
    choice, successor, earlier = rng.random(n), rng.random(n), rng.random(n)
    position = np.arange(n) - np.repeat(first, lengths)
    which = np.minimum(np.searchsorted(np.cumsum(SUCCESSOR_P), successor, side="right"), SUCCESSOR_P.size - 1)
    born = world.item_birth <= t
    for p in range(1, int(lengths.max())):
        at = np.flatnonzero(position == p)
        repeat = choice[at] < cfg.repeat_share
        nxt = world.successors[items[at - 1], which[at]]
        move = ~repeat & (choice[at] < cfg.repeat_share + cfg.transition_share) & born[nxt]
        items[at[move]] = nxt[move]
        back = at - 1 - np.floor(earlier[at] * p).astype(np.int64)  # uniform over the p earlier views
        items[at[repeat]] = items[back[repeat]]


def _session_lengths(n_views: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    """Session lengths (1 + Poisson(mean - 1)) summing to exactly n_views; the last one is cut to fit."""
    lengths = 1 + rng.poisson(mean - 1, size=int(np.ceil(n_views / mean)) + 8)
    while lengths.sum() < n_views:
        lengths = np.concatenate([lengths, 1 + rng.poisson(mean - 1, size=8)])
    total = np.cumsum(lengths)
    keep = int(np.searchsorted(total, n_views)) + 1
    lengths = lengths[:keep].copy()
    lengths[-1] -= total[keep - 1] - n_views
    return lengths


def _choose_items(
    tastes: np.ndarray, item_vectors: np.ndarray, item_sampler: tuple[np.ndarray, np.ndarray], strength: float,
    candidates: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Sampling-importance-resampling: candidates by popularity, one kept in proportion to exp(strength * affinity).

    This draws from popularity x exp(strength * affinity) without scoring the whole catalogue per view.
    """
    n = tastes.shape[0]
    chosen = np.empty(n, dtype=np.int64)
    affinity = np.empty(n)
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        cand = _alias_draw(item_sampler, (hi - lo, candidates), rng)
        aff = np.einsum("nd,nkd->nk", tastes[lo:hi], item_vectors[cand])
        weights = np.exp(strength * (aff - aff.max(axis=1, keepdims=True)))
        cum = np.cumsum(weights, axis=1)
        pick = (cum < rng.random((hi - lo, 1), dtype=np.float32) * cum[:, -1:]).sum(axis=1)
        pick = np.minimum(pick, candidates - 1)  # float32 rounding at the very top of the cumulative sum
        rows = np.arange(hi - lo)
        chosen[lo:hi] = cand[rows, pick]
        affinity[lo:hi] = aff[rows, pick]
    return chosen, affinity


def _funnel(
    world: World, users: np.ndarray, items: np.ndarray, affinity: np.ndarray, view_ts: np.ndarray, day_end: int,
    rng: np.random.Generator,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """view -> click -> rating | purchase; returns (users, items, values, ts) per event type."""
    n = users.size
    clicked = rng.random(n) < world.click_given_affinity(affinity)
    click_ts = np.minimum(view_ts + 1 + rng.exponential(20.0, n).astype(np.int64), day_end)
    rated = clicked & (rng.random(n) < RATING_SHARE)
    stars = np.clip(np.rint(3.0 + 2.5 * (affinity - 0.45) + rng.normal(0.0, 0.6, n)), 1, 5)
    rating_ts = np.minimum(click_ts + 30 + rng.exponential(120.0, n).astype(np.int64), day_end)
    bought = clicked & (rng.random(n) < 1.0 / (1.0 + np.exp(-(2.5 * affinity - 3.5))))
    purchase_ts = np.minimum(click_ts + 10 + rng.exponential(60.0, n).astype(np.int64), day_end)
    ones = np.ones(n)
    return {
        "view": (users, items, ones, view_ts),
        "click": (users[clicked], items[clicked], ones[clicked], click_ts[clicked]),
        "rating": (users[rated], items[rated], stars[rated], rating_ts[rated]),
        "purchase": (users[bought], items[bought], world.item_price[items[bought]], purchase_ts[bought]),
    }


def _to_table(events: dict, user_ids: pa.Array, item_ids: pa.Array, ts_texts: pa.Array, day_start: int) -> pa.Table:
    users = np.concatenate([e[0] for e in events.values()])
    items = np.concatenate([e[1] for e in events.values()])
    values = np.concatenate([e[2] for e in events.values()]).astype(np.float64)
    ts = np.concatenate([e[3] for e in events.values()])
    kinds = np.repeat(np.arange(len(events)), [e[0].size for e in events.values()])
    order = np.argsort(ts, kind="stable")  # ties keep funnel order: view, click, rating, purchase
    return pa.table(
        [user_ids.take(users[order]), item_ids.take(items[order]), pa.array(list(events), pa.string()).take(kinds[order]),
         pa.array(values[order]), ts_texts.take(ts[order] - day_start)],
        schema=EVENT_SCHEMA,
    )


def write_metadata(world: World, out: Path) -> None:
    """``out/_meta/items.parquet`` (genres derived from the item vectors) and ``users.parquet``."""
    meta = out / "_meta"
    meta.mkdir(parents=True, exist_ok=True)
    start = np.datetime64(world.config.start_date)
    items = pa.table({
        "item_id": world.item_ids,
        "title": np.char.add("Synthetic item ", np.arange(1, world.config.items + 1).astype(str)),
        "categories": pa.array(world.item_genres(), pa.list_(pa.string())),
        "price": world.item_price,
        "release_date": np.datetime_as_string(start + world.item_birth.astype("timedelta64[D]")),
    })
    users = pa.table({
        "user_id": world.user_ids,
        "signup_date": np.datetime_as_string(start + world.user_birth.astype("timedelta64[D]")),
    })
    for name, table in (("items", items), ("users", users)):
        partial = meta / f".{name}.parquet.tmp"
        pq.write_table(table, partial)
        partial.replace(meta / f"{name}.parquet")


def _counted(chunks: Iterator[pa.Table], counts: Counter[str]) -> Iterator[pa.Table]:
    for chunk in chunks:
        for entry in pc.value_counts(chunk.column("event_type")).to_pylist():
            counts[entry["values"]] += entry["counts"]
        yield chunk


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=np.float64)
    return cdf / cdf[-1]


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table: O(1) draws from a fixed discrete distribution (a binary search per draw is
    cache-hostile and dominated the run time for millions of candidate draws)."""
    n = weights.size
    scaled = weights * (n / weights.sum())
    accept = np.ones(n)
    alias = np.arange(n)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        accept[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return accept, alias  # leftovers keep accept 1: they are exactly full up to rounding


def _alias_draw(table: tuple[np.ndarray, np.ndarray], shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    accept, alias = table
    slot = rng.integers(0, accept.size, size=shape)
    return np.where(rng.random(shape) < accept[slot], slot, alias[slot])


def _draw(cdf: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, uniforms, side="right"), cdf.size - 1)
