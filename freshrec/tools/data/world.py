"""The hidden ground truth behind synthetic events: who likes what, and how that changes over time.

A ``World`` holds latent vectors for users and items, item popularity, birth days, user activity and
drift parameters. The synthetic generator (``freshrec.tools.data.synth``) draws events from it and the traffic
simulator loads it back (``load_world``) to decide whether a simulated user clicks a recommendation.

Model, per day index t (days since the world's start date):
  user taste   u(t) = cos(w t) u0 + sin(w t) d      d: a unit-norm direction towards another genre
  affinity     a(u, i, t) = <u(t), v_i>
  choice       P(view i | u, t)  ~  pop_i(t) * exp(preference_strength * a)   over items born by t
  popularity   pop_i(t) = rank_i ** -zipf_exponent * (1 + novelty_boost * exp(-(t - birth_i) / novelty_days))
  click        P(click | view) = sigmoid(click_slope * a + click_bias)
  activity     w_u(t) = activity_u * (1 + newcomer_boost * exp(-(t - birth_u) / novelty_days))   users born by t

Sessions (``session_intent`` > 0; 0 keeps the original generator, view by view): a user's views come in
sessions of a few minutes. A session opens on an anchor item drawn as above, and its intent is a direction
near that item, q = unit(v_anchor + intent_spread * noise). The session's other views are drawn from
  P(view i | u, q, t)  ~  pop_i(t) * exp(preference_strength * a + session_intent * <q, v_i>)
so what a user viewed minutes ago predicts what they view next better than their lasting taste does;
clicks, ratings and purchases still follow the lasting affinity a.

Sequential structure (``transition_share`` / ``repeat_share`` > 0; both 0 keep the generator above): every
item has three fixed successors (``successors``: drawn once per world, uniformly over the catalogue, taken with
probabilities SUCCESSOR_P), and a session's views after the first are a chain. With probability
``repeat_share`` a view re-consumes an item viewed earlier in the same session (uniformly among them); else
with ``transition_share`` it is a successor of the session's previous view (an item-to-item Markov chain;
a successor not born yet falls back to the intent draw); else the intent draw above. So the next item depends
on the last one, not only on which items came before: a model that ignores order cannot see that.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np

from freshrec.core.errors import InvalidInput, NotFound

GENRES = ("action", "comedy", "drama", "documentary", "family", "romance", "scifi", "thriller")

# Independent random streams derive from (seed, stream tag, ...): the world and each day never share one.
WORLD_STREAM = 1
DAY_STREAM = 2
TRANSITION_STREAM = 3
SUCCESSOR_P = np.array([0.6, 0.3, 0.1])  # probability of an item's first, second and third successor


@dataclass(frozen=True)
class WorldConfig:
    users: int = 2000
    items: int = 1000
    seed: int = 42
    dim: int = 16
    initial_share: float = 0.7        # users/items that exist on day 0; the rest are born later,
    growth_days: float = 20.0         # ... on day 1 + Exponential(growth_days)
    drift_rate: float = 0.02          # radians per day that each user's taste turns
    preference_strength: float = 4.0
    zipf_exponent: float = 0.9
    novelty_boost: float = 4.0
    novelty_days: float = 5.0
    click_slope: float = 3.0
    click_bias: float = -2.2
    start: str = "2026-01-01"         # the date of day index 0
    session_intent: float = 0.0       # pull of a session's intent on its views; 0 = no sessions
    session_views: float = 6.0        # mean views per session
    session_gap_s: float = 60.0       # mean seconds between two views of a session
    intent_spread: float = 0.35       # noise around the anchor item: how wide a session's cluster of items is
    newcomer_boost: float = 0.0       # extra activity of a user on their birth day, fading over novelty_days
    transition_share: float = 0.0     # share of a session's later views that follow the item-to-item chain
    repeat_share: float = 0.0         # share of a session's later views that re-consume an earlier view of it

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 1 or self.dim < 2:
            raise InvalidInput("users and items must be >= 1 and dim >= 2")
        if not 0 < self.initial_share <= 1:
            raise InvalidInput("initial_share must be in (0, 1]")
        if self.growth_days <= 0:
            raise InvalidInput("growth_days must be > 0")
        if self.session_intent < 0 or self.session_views < 1 or self.session_gap_s <= 0 or self.newcomer_boost < 0:
            raise InvalidInput("session_intent and newcomer_boost must be >= 0, session_views >= 1, session_gap_s > 0")
        if self.transition_share < 0 or self.repeat_share < 0 or self.transition_share + self.repeat_share > 1:
            raise InvalidInput("transition_share and repeat_share must be >= 0 and sum to at most 1")

    @property
    def sessions(self) -> bool:
        """Views come in sessions (with an intent, a chain of transitions or repeats)."""
        return self.session_intent > 0 or self.transition_share > 0 or self.repeat_share > 0

    @property
    def chained(self) -> bool:
        return self.transition_share > 0 or self.repeat_share > 0

    @property
    def start_date(self) -> dt.date:
        return dt.date.fromisoformat(self.start)


@dataclass(frozen=True, eq=False)  # arrays inside: identity equality, no hashing of arrays
class World:
    config: WorldConfig
    genre_vectors: np.ndarray      # (genres, dim)
    user_base: np.ndarray          # (users, dim) taste on day 0
    user_drift: np.ndarray         # (users, dim) direction the taste turns towards, same norm as base
    user_birth: np.ndarray         # (users,) day index the user appears
    user_activity: np.ndarray      # (users,) heavy-tailed relative activity
    item_vectors: np.ndarray       # (items, dim)
    item_birth: np.ndarray         # (items,) day index the item appears
    item_rank: np.ndarray          # (items,) popularity rank, 1 = most popular
    item_price: np.ndarray         # (items,) purchase value

    # ---- ids ---------------------------------------------------------------------------------
    @cached_property
    def user_ids(self) -> np.ndarray:
        return np.char.add("u", np.arange(1, self.config.users + 1).astype(str))

    @cached_property
    def item_ids(self) -> np.ndarray:
        return np.char.add("i", np.arange(1, self.config.items + 1).astype(str))

    def user_index(self, user_ids: object) -> np.ndarray:
        return _parse_ids(user_ids, "u", self.config.users)

    def item_index(self, item_ids: object) -> np.ndarray:
        return _parse_ids(item_ids, "i", self.config.items)

    def day_index(self, day: dt.date | int) -> int:
        """Days since the world's start; accepts a day index, a date or a datetime."""
        if isinstance(day, (int, np.integer)):
            return int(day)
        if isinstance(day, dt.datetime):
            day = day.date()
        return (day - self.config.start_date).days

    # ---- the generative model ----------------------------------------------------------------
    def user_vectors(self, t: int, users: np.ndarray | slice = slice(None)) -> np.ndarray:
        angle = self.config.drift_rate * t
        return np.cos(angle) * self.user_base[users] + np.sin(angle) * self.user_drift[users]

    def item_log_popularity(self, t: int) -> np.ndarray:
        """Log popularity of every item on day t; -inf for items not born yet."""
        age = t - self.item_birth
        novelty = self.config.novelty_boost * np.exp(-np.maximum(age, 0) / self.config.novelty_days)
        logpop = -self.config.zipf_exponent * np.log(self.item_rank) + np.log1p(novelty)
        return np.where(age >= 0, logpop, -np.inf)

    def affinity(self, users: np.ndarray, items: np.ndarray, t: int) -> np.ndarray:
        """<u(t), v_i> for index arrays of equal shape."""
        return np.einsum("nd,nd->n", self.user_vectors(t, users), self.item_vectors[items])

    def click_given_affinity(self, affinity: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.config.click_slope * affinity + self.config.click_bias)))

    def click_probability(self, user_id: object, item_id: object, day: dt.date | int) -> np.ndarray | float:
        """P(click | the user is shown the item on that day). Scalars in, float out; sequences in, array out."""
        users, items = self.user_index(user_id), self.item_index(item_id)
        users, items = np.broadcast_arrays(users, items)
        t = self.day_index(day)
        p = self.click_given_affinity(self.affinity(users.ravel(), items.ravel(), t)).reshape(users.shape)
        # Unborn items do not exist yet: nobody can click them.
        p = np.where(self.item_birth[items] <= t, p, 0.0)
        return float(p) if p.ndim == 0 else p

    def active_users(self, t: int) -> np.ndarray:
        return np.flatnonzero(self.user_birth <= t)

    def user_weights(self, t: int, users: np.ndarray) -> np.ndarray:
        """Relative activity of the given (born) users on day t: newcomers explore more in their first days."""
        if self.config.newcomer_boost == 0:
            return self.user_activity[users]
        age = t - self.user_birth[users]
        return self.user_activity[users] * (1 + self.config.newcomer_boost * np.exp(-age / self.config.novelty_days))

    def sample_users(self, n: int, day: dt.date | int, rng: np.random.Generator) -> np.ndarray:
        """n user ids (with repetition) of users born by that day, drawn by activity."""
        t = self.day_index(day)
        active = self.active_users(t)
        weights = self.user_weights(t, active)
        picked = active[rng.choice(active.size, size=n, p=weights / weights.sum())]
        return self.user_ids[picked]

    @cached_property
    def successors(self) -> np.ndarray:
        """(items, 3) each item's successors in the item-to-item chain; derived from the seed, not stored."""
        rng = np.random.default_rng([self.config.seed, TRANSITION_STREAM])
        n = self.config.items
        if n == 1:
            return np.zeros((1, SUCCESSOR_P.size), dtype=np.int64)
        offsets = 1 + rng.integers(0, n - 1, size=(n, SUCCESSOR_P.size))  # never the item itself
        return (np.arange(n)[:, None] + offsets) % n

    def session_intents(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Unit intent directions of sessions opened on the given anchor items (float32, one row each)."""
        noise = rng.standard_normal((anchors.size, self.config.dim)) / np.sqrt(self.config.dim)
        return _unit(self.item_vectors[anchors] + self.config.intent_spread * noise).astype(np.float32)

    def item_genres(self) -> list[list[str]]:
        """Genres of each item: the closest genre, plus any other almost as close (derived from the vectors)."""
        sims = self.item_vectors @ self.genre_vectors.T
        best = sims.max(axis=1, keepdims=True)
        close = sims >= best - 0.15
        return [[GENRES[g] for g in np.flatnonzero(row)] for row in close]


def make_world(config: WorldConfig) -> World:
    """Draw a world from the config; deterministic for the config."""
    rng = np.random.default_rng([config.seed, WORLD_STREAM])
    n_genres, dim = len(GENRES), config.dim
    genre_vectors = _unit(rng.standard_normal((n_genres, dim)))
    genre_share = rng.dirichlet(np.full(n_genres, 2.0))

    # Users like one genre a lot and a second one a bit; taste turns slowly towards a third.
    first = rng.choice(n_genres, size=config.users, p=genre_share)
    second = rng.choice(n_genres, size=config.users, p=genre_share)
    noise = rng.standard_normal((config.users, dim)) / np.sqrt(dim)
    user_base = 0.8 * genre_vectors[first] + 0.35 * genre_vectors[second] + 0.35 * noise
    towards = genre_vectors[rng.choice(n_genres, size=config.users, p=genre_share)]
    towards = towards + 0.5 * rng.standard_normal((config.users, dim)) / np.sqrt(dim)
    user_drift = _orthogonal_part(towards, user_base)
    user_drift *= np.linalg.norm(user_base, axis=1, keepdims=True) / np.linalg.norm(user_drift, axis=1, keepdims=True)
    # Log-normal activity: a few heavy users, a long tail of occasional ones.
    user_activity = rng.lognormal(0.0, 1.1, size=config.users)

    item_genre = rng.choice(n_genres, size=config.items, p=genre_share)
    item_vectors = _unit(genre_vectors[item_genre] + 0.6 * rng.standard_normal((config.items, dim)) / np.sqrt(dim))
    item_rank = rng.permutation(config.items) + 1
    item_price = np.round(np.exp(rng.normal(2.5, 0.8, size=config.items)), 2)

    return World(
        config=config,
        genre_vectors=genre_vectors,
        user_base=user_base,
        user_drift=user_drift,
        user_birth=_birth_days(rng, config.users, config),
        user_activity=user_activity,
        item_vectors=item_vectors,
        item_birth=_birth_days(rng, config.items, config),
        item_rank=item_rank,
        item_price=item_price,
    )


def save_world(world: World, path: Path) -> Path:
    """Write the ground truth to an .npz file (atomically)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f.name: getattr(world, f.name) for f in fields(World) if f.name != "config"}
    config = {f"config_{k}": np.asarray(v) for k, v in asdict(world.config).items()}
    partial = path.with_name(f".{path.name}.tmp")
    with open(partial, "wb") as fh:
        np.savez_compressed(fh, **(arrays | config))
    partial.replace(path)
    return path


def load_world(path: Path) -> World:
    """Load the ground truth written by ``save_world`` (``freshrec data synth --truth PATH``)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"ground-truth file {path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        # Files written before a knob existed lack it: its default is what generated them.
        config_values = {f.name: data[f"config_{f.name}"].item() for f in fields(WorldConfig) if f"config_{f.name}" in data}
        arrays = {f.name: data[f.name] for f in fields(World) if f.name != "config"}
    return World(config=WorldConfig(**config_values), **arrays)


def _birth_days(rng: np.random.Generator, n: int, config: WorldConfig) -> np.ndarray:
    # Independent of how many days get generated: asking for more days extends the same world.
    late = rng.random(n) >= config.initial_share
    days = 1 + np.floor(rng.exponential(config.growth_days, size=n))
    late[0] = False  # someone and something exist on day 0, however small the world
    return np.where(late, days, 0).astype(np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _orthogonal_part(x: np.ndarray, base: np.ndarray) -> np.ndarray:
    coef = np.einsum("nd,nd->n", x, base) / np.einsum("nd,nd->n", base, base)
    return x - coef[:, None] * base


def _parse_ids(ids: object, prefix: str, n: int) -> np.ndarray:
    """'u17' -> 16 (scalar or any sequence), with a clear error for ids this world does not have."""
    arr = np.asarray(ids, dtype=str)
    try:
        if not np.all(np.char.startswith(arr, prefix)):
            raise ValueError
        index = np.char.lstrip(arr, prefix).astype(np.int64) - 1
    except ValueError:
        raise InvalidInput(f"not a synthetic id of the form {prefix}<n>: {ids!r}") from None
    if index.size and (index.min() < 0 or index.max() >= n):
        raise InvalidInput(f"id out of range for this world ({prefix}1..{prefix}{n}): {ids!r}")
    return index
