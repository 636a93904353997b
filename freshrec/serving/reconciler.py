"""Reconciler: make the loaded versions and routing match the registry and the live snapshot.

Desired state comes from the registry (polled on its generation counter, or on an admin request). New
versions load in a worker thread (checksum, session, warm-up) while the current table keeps serving;
the new table replaces the old one in a single assignment, so no request is dropped. A version that
fails to load never takes traffic: the champion it should replace keeps serving and the failure is
counted and reported. ``previous`` stays loaded so a rollback is a table swap, not a load.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from freshrec.core.errors import FreshRecError
from freshrec.core.layout import Layout
from freshrec.core.settings import Settings
from freshrec.serving.execution import choose_providers
from freshrec.serving.metrics import ServingMetrics
from freshrec.serving.registry_gateway import DesiredState, DesiredVersion, RegistryGateway
from freshrec.serving.routing import RoutingTable
from freshrec.serving.snapshot import BindableSnapshot, OnlineSnapshot, current_snapshot_name, open_snapshot
from freshrec.serving.versions import ServedVersion, VersionModel, load_model, rebind, serve_version

log = logging.getLogger(__name__)
RETRY_FAILED_AFTER_S = 60.0
# An absolute path outside home, as exception texts quote it (no spaces: those under home are found first).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/:'\"]+/)+[^\s/:'\"]+")


def public_reason(reason: str, home: Path) -> str:
    """A refusal reason fit for the open GET /v1/models: every file is shortened to ``.../<run>/<file>``.

    Paths under home are matched by home's own text first, so a home with spaces in its name cannot leave a
    tail of itself behind; any other absolute path is cut by shape."""
    under_home = re.compile(re.escape(str(home)) + r"(?:/[^\s/:'\"]+)*")
    reason = under_home.sub(lambda m: _shortened(m.group(), home), reason)
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + "/".join(Path(m.group()).parts[-2:]), reason)


def _shortened(path: str, home: Path) -> str:
    parts = Path(path).relative_to(home).parts
    return "/".join(("...", *parts[-2:]))


@dataclass(frozen=True)
class LoadFailure:
    version: str
    reason: str
    at: float


def _version(served: ServedVersion | DesiredVersion | None) -> str | None:
    return served.version if served is not None else None


def applied_generation(desired: DesiredState, current: RoutingTable, champion: ServedVersion | None,
                       canary: ServedVersion | None) -> int:
    """The registry generation this worker may claim to serve after a pass.

    Workers report it in /v1/models and the release reads it as proof of what every worker serves, so it only
    moves to the registry's generation once the versions that take traffic under it (champion and canary) are
    the ones serving here; a version that failed to load holds it back at the last generation fully applied.
    ``previous`` is a standby: a failure to load it is reported in ``missing`` but does not hold a step back.
    """
    if _version(champion) == _version(desired.champion) and _version(canary) == _version(desired.canary):
        return desired.generation
    return current.generation


def _same_artifact(served: ServedVersion, want: DesiredVersion) -> bool:
    artifact = want.artifacts.get(served.model.artifact_variant)
    return artifact is not None and artifact.sha256 == served.model.sha256


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        gateway: RegistryGateway,
        scoring_executor: Executor | None,
        metrics: ServingMetrics,
        on_swap: Callable[[RoutingTable], None],
    ) -> None:
        self.settings = settings
        self.providers = choose_providers(settings.serving.providers)
        self.table = RoutingTable()
        self.failures: dict[tuple[str, str], LoadFailure] = {}
        self._gateway = gateway
        self._scoring_executor = scoring_executor
        self._metrics = metrics
        self._on_swap = on_swap
        self._online_dir = Layout(settings.home).online
        self._snapshot: BindableSnapshot = OnlineSnapshot.empty()
        self._lock = asyncio.Lock()
        self._last_seen: tuple[int, str | None] | None = None  # (registry generation, snapshot name)
        self._retry_at: float | None = None
        self._missing: list[str] = []  # versions the registry wants that are not loaded (refused)

    @property
    def snapshot(self) -> BindableSnapshot:
        """The online snapshot being served (its watermark says which live entries it covers)."""
        return self._snapshot

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.serving.reconcile_interval_s)
            try:
                await self.reconcile()
            except Exception:  # noqa: BLE001 - a registry outage must not kill the poller; the old table serves
                self._metrics.reconciles.labels("error").inc()
                log.exception("reconcile failed; keeping the current versions")

    async def reconcile(self, force: bool = False) -> dict:
        """One pass; returns what is being served afterwards (also the admin route's answer)."""
        async with self._lock:
            generation = await asyncio.to_thread(self._gateway.generation)
            snapshot_name = await asyncio.to_thread(current_snapshot_name, self._online_dir)
            seen = (generation, snapshot_name)
            retry_due = self._retry_at is not None and time.monotonic() >= self._retry_at
            if seen == self._last_seen and not retry_due and not force:
                self._metrics.reconciles.labels("unchanged").inc()
                return self.describe()
            desired = await asyncio.to_thread(self._gateway.desired_state)
            fresh = await self._next_snapshot(snapshot_name)
            try:
                table = await self._build_table(desired, fresh or self._snapshot, force=force or retry_due,
                                                snapshot_changed=fresh is not None)
            except (FreshRecError, OSError, ValueError) as exc:
                if fresh is None:
                    raise
                # The new snapshot's lists are read when a model binds them: one that cannot be bound leaves the
                # versions on the snapshot they serve now (and its watermark), as an unreadable one always did.
                log.error("online snapshot %s unreadable (%s); keeping %r", fresh.name, exc, self._snapshot.name)
                fresh = None
                table = await self._build_table(desired, self._snapshot, force=force or retry_due, snapshot_changed=False)
            if fresh is not None:
                self._snapshot = fresh
            # Compared with what was last *attempted*: a refused version or an unreadable snapshot is not
            # retried on every poll, only after RETRY_FAILED_AFTER_S or on a change.
            self._last_seen = seen
            wanted = {v.version for v in (desired.champion, desired.canary, desired.previous) if v is not None}
            loaded = {s.version for _, s in table.loaded()}
            self._missing = sorted(wanted - loaded)
            self._retry_at = time.monotonic() + RETRY_FAILED_AFTER_S if self._missing else None
            self.table = table
            self._on_swap(table)
            self._metrics.reconciles.labels("swapped").inc()
            return self.describe()

    async def _next_snapshot(self, name: str | None) -> BindableSnapshot | None:
        """The live snapshot when it is not the one served (None when it is, or when it cannot be opened)."""
        if name is None or name == self._snapshot.name:
            return None
        try:
            return await asyncio.to_thread(open_snapshot, self._online_dir, name)
        except (FreshRecError, OSError, ValueError) as exc:
            log.error("online snapshot %s unreadable (%s); keeping %r", name, exc, self._snapshot.name)
            return None

    async def _build_table(self, desired: DesiredState, snapshot: BindableSnapshot, *, force: bool,
                           snapshot_changed: bool) -> RoutingTable:
        current = self.table
        loaded = {s.version: s for _, s in current.loaded()}

        async def served(want: DesiredVersion | None) -> ServedVersion | None:
            if want is None:
                return None
            existing = loaded.get(want.version)
            if existing is not None and _same_artifact(existing, want):
                if snapshot_changed:
                    return await asyncio.to_thread(
                        rebind, existing, snapshot, self.settings, self._scoring_executor, self._observer(want.version)
                    )
                return existing
            model = await self._load(want, force=force)
            if model is None:
                return None
            return await asyncio.to_thread(
                serve_version, model, snapshot, self.settings, self._scoring_executor, self._observer(want.version)
            )

        champion = await served(desired.champion)
        if champion is None and current.champion is not None:
            # The new champion failed to load (or none is set): the version serving now keeps serving.
            champion = current.champion
            if snapshot_changed:
                champion = await asyncio.to_thread(
                    rebind, champion, snapshot, self.settings, self._scoring_executor, self._observer(champion.version)
                )
        canary = await served(desired.canary)
        previous = await served(desired.previous)
        if champion is None and previous is not None and desired.champion is not None:
            # Nothing serves yet (a start) and the champion cannot load: `previous` answers in its place, the
            # champion is retried (it stays in "missing"), rather than every request getting a 503.
            log.error("champion %s cannot load; serving previous %s until it can", desired.champion.version,
                      previous.version)
            champion = previous
        wanted = [v for v in (desired.champion, desired.canary, desired.previous) if v is not None]
        return RoutingTable(
            champion=champion,
            canary=canary,
            previous=previous,
            canary_weight=desired.canary_weight if canary is not None else 0.0,
            shadow=desired.shadow,
            generation=applied_generation(desired, current, champion, canary),
            snapshot_name=snapshot.name,
            faults={v.version: dict(v.faults) for v in wanted},
        )

    async def _load(self, want: DesiredVersion, *, force: bool) -> VersionModel | None:
        key = (want.version, ",".join(sorted(a.sha256 for a in want.artifacts.values())))
        failure = self.failures.get(key)
        if failure is not None and not force and time.time() - failure.at < RETRY_FAILED_AFTER_S:
            return None
        try:
            model = await asyncio.to_thread(load_model, want, self.settings, self.providers)
        except Exception as exc:  # noqa: BLE001 - any load failure (checksum, ORT, warm-up) refuses the version
            reason = exc.message if isinstance(exc, FreshRecError) else f"{type(exc).__name__}: {exc}"
            self.failures[key] = LoadFailure(want.version, reason, time.time())
            self._metrics.load_failures.labels(want.version).inc()
            log.error("version %s refused: %s", want.version, reason)
            return None
        self.failures.pop(key, None)
        log.info("version %s loaded (%s on %s)", want.version, model.artifact_variant, model.scorer.provider)
        return model

    def _observer(self, version: str):
        return self._metrics.observe_batch(version)

    def describe(self) -> dict:
        table = self.table
        now = time.time()
        return {
            "generation": table.generation,
            "snapshot": table.snapshot_name or None,
            "canary_weight": table.canary_weight,
            "shadow": table.shadow,
            "providers": self.providers,
            "versions": [
                {
                    "role": role,
                    "version": s.version,
                    "artifact": s.model.artifact_variant,
                    "provider": s.model.scorer.provider,
                    "sha256": s.model.sha256,
                    "n_items": s.model.n_items,
                    "n_candidates": int(s.candidates.size),
                    # ANN retrieval above serving.max_candidates: what /v1/recommend ranks with instead
                    "retrieval": s.model.retrieval.describe() if s.model.retrieval else None,
                    "loaded_at": s.model.loaded_at,
                    "age_s": (now - s.model.created_at.timestamp()) if s.model.created_at else None,
                    "faults": table.faults.get(s.version, {}),
                }
                for role, s in table.loaded()
            ],
            # generation: the registry state whose champion and canary serve here (see applied_generation);
            # missing names what of the registry's wanted versions could not be loaded
            "missing": self._missing,
            "refused": [{"version": f.version, "reason": f.reason, "at": f.at} for f in self.failures.values()],
        }
