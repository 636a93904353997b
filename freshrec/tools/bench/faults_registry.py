"""Registry faults of ``freshrec bench faults``: the registry database unavailable, damaged ONNX artefacts,
and promotions racing each other.

The database outage is a TCP proxy on loopback between serving and the real Postgres: cutting it closes
every connection through it and refuses new ones, as a database host that went away does, without
touching the Postgres other users share.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import create_engine, text

from freshrec.core.errors import Conflict, StageFailed
from freshrec.tools.bench.faults_process import DAMAGE, damage
from freshrec.tools.bench.faults_traffic import HOST, Traffic, champion_of, judged, under_traffic, wait_for
from freshrec.tools.bench.faults_world import ADMIN_TOKEN, FaultWorld
from freshrec.tools.bench.processes import free_port


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target`` on a thread of its own; ``cut`` and ``restore`` it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.port = free_port()
        self._target = target
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faults-proxy", daemon=True)
        self._thread.start()

    def _call(self, coro) -> None:  # noqa: ANN001 - any coroutine of this proxy
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as from a host that went away

    def restore(self) -> None:
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._close())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def _proxied(url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy to the database of ``url``, listening; yields it and the same URL through it."""
    parts = urlsplit(url)
    proxy = TcpProxy((parts.hostname or HOST, parts.port or 5432))
    proxy.restore()
    netloc = f"{parts.username}@{HOST}:{proxy.port}" if parts.username else f"{HOST}:{proxy.port}"
    try:
        yield proxy, urlunsplit(parts._replace(netloc=netloc))
    finally:
        proxy.close()


def registry_down(world: FaultWorld, outage_s: float) -> dict:
    """The registry database goes away under load: serving keeps answering with the versions it loaded; a
    promotion made meanwhile (straight on the database) goes live once the reconciler reaches it again."""
    with _proxied(world.registry_url) as (proxy, url), world.serve(world.env(registry_url=url)) as server:
        old, new = champion_of(server.port), world.register(seed=3)

        def fault(traffic: Traffic) -> float | None:
            traffic.mark("db_down")
            proxy.cut()
            time.sleep(outage_s / 2)
            world.registry.promote(int(new), actor="bench-faults", reason="promoted while serving cannot see the registry")
            time.sleep(outage_s / 2)
            traffic.mark("db_back")
            proxy.restore()
            live = wait_for(lambda: champion_of(server.port) == new, 60)
            traffic.mark("new_live")
            return live

        traffic, live_after_s = under_traffic(server.port, world.users, fault)
    down = traffic.counts("db_down", "db_back")
    result = {"outage_s": outage_s, "old_champion": old, "promoted_during_outage": new, "during_outage": down,
              "after": traffic.counts("db_back", "end"), "new_champion_live_after_db_back_s": live_after_s}
    return judged(result, no_failure_during_outage=down["sent"] > 0 and not down["failed"],
                  old_champion_served_during_outage=set(down["served_by"]) == {old},
                  reconciler_recovered=live_after_s is not None,
                  no_failure_after=not result["after"]["failed"])


def _reconcile(port: int) -> dict:
    return httpx.post(f"http://{HOST}:{port}/admin/reconcile", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                      timeout=60).json()


def _damaged_promotion(world: FaultWorld, port: int, kind: str, traffic: Traffic) -> dict:
    """One kind of damage, caught twice: before a promotion (the registry hashes every file) and after
    it (on shared storage, say), when serving must refuse it at load; then rolled back in the registry."""
    before = world.register(seed=10)
    damage(world.artifact(before), kind, world.n_items, world.dim)
    try:
        world.registry.promote(int(before), actor="bench-faults", reason=f"{kind} before promotion")
        registry_refused = False
    except Conflict:
        registry_refused = True
    after = world.register(seed=11)
    world.registry.promote(int(after), actor="bench-faults", reason=f"{kind} after promotion")
    damage(world.artifact(after), kind, world.n_items, world.dim)
    traffic.mark(f"{kind}_reconcile")
    refused = {f["version"]: f["reason"] for f in _reconcile(port)["refused"]}
    serving = champion_of(port)
    world.registry.rollback(actor="bench-faults", reason=f"{kind}: back to the good champion")
    _reconcile(port)
    return {"registry_refused_promotion": registry_refused, "serving_refused": after in refused,
            "reason": refused.get(after), "champion_served": serving}


def corrupt_artifacts(world: FaultWorld) -> dict:
    """Truncated, corrupted and checksum-mismatched ONNX files never take traffic: the old model serves."""
    env = world.env(FRESHREC_SERVING__RECONCILE_INTERVAL_S="3600")  # loads happen when the bench asks (admin reconcile)
    with world.serve(env) as server:
        good = champion_of(server.port)
        traffic, cases = under_traffic(
            server.port, world.users, lambda t: {kind: _damaged_promotion(world, server.port, kind, t) for kind in DAMAGE})
    counts = traffic.counts("start", "end")
    result = {"good_champion": good, "cases": cases, "traffic": counts}
    return judged(result, registry_refused_every_damaged_promotion=all(c["registry_refused_promotion"] for c in cases.values()),
                  serving_refused_every_damaged_load=all(c["serving_refused"] for c in cases.values()),
                  old_model_kept_serving=all(c["champion_served"] == good for c in cases.values())
                  and set(counts["served_by"]) == {good},
                  no_failed_request=counts["sent"] > 0 and not counts["failed"])


def _pg_waiters(engine) -> int:  # noqa: ANN001 - a SQLAlchemy engine
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database() "
            "AND query ILIKE 'UPDATE models%'")).scalar_one()


def concurrent_promotions(world: FaultWorld, racers: int = 4) -> dict:
    """``racers`` ``freshrec registry promote`` processes at once: exactly one wins, the rest get Conflict.
    A third connection holds the model row while they start, so that all of them really queue on it
    together (as tests/registry/test_concurrency.py does), rather than most likely."""
    champion = world.champion()
    versions = [world.register(seed=20 + n) for n in range(racers)]
    engine = create_engine(world.registry_url)
    try:
        with engine.connect() as holder:
            holder.exec_driver_sql("SELECT id FROM models FOR UPDATE")
            processes = [subprocess.Popen([sys.executable, "-m", "freshrec.cli", "registry", "promote", v], env=world.env(),
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for v in versions]
            queued = wait_for(lambda: _pg_waiters(engine) >= racers, 60, poll_s=0.1) is not None
            holder.exec_driver_sql("ROLLBACK")
        outputs = [p.communicate(timeout=120)[0] for p in processes]
    finally:
        engine.dispose()
    codes = {v: p.returncode for v, p in zip(versions, processes)}
    winners = [v for v, code in codes.items() if code == 0]
    if not queued:
        raise StageFailed(f"the promotions never queued on the row lock together: {outputs}")
    result = {"racers": racers, "exit_codes": codes, "winners": winners,
              "champion_after": world.champion(), "previous_after": world.champion("previous")}
    return judged(result, exactly_one_winner=len(winners) == 1,
                  losers_got_conflict=all(code == Conflict.exit_code for v, code in codes.items() if v not in winners),
                  registry_agrees=winners == [result["champion_after"]] and result["previous_after"] == champion)
