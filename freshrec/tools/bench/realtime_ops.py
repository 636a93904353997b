"""Operational measurements of real-time events for ``freshrec bench realtime`` (freshrec.tools.bench.realtime).

Each takes a FRESHREC_HOME with a champion and a published online snapshot and runs its own ``freshrec
serve`` processes on a scratch home inside it (a copy of the SQLite registry, the snapshot folder linked in),
so the events it posts land nowhere else. Each returns a JSON-safe dict with ``targets`` {name: {value,
target, met}}.

- ingestion: events/s one worker accepts (its own counter), fsync on (off for reference), at batch 1 with 64
  requests in flight (so group commit can work) and at batch 100; closed loop, then open loop at the target.
- visibility: two replicas sharing home and store. A user unknown to the snapshot gets B's cold-start list,
  clicks its first item on A, and a new connection asks B again: visible = that item is gone and the list
  changed. Without the event B answers the cold list, which holds the item: the check cannot pass by
  accident. Latency: POST sent -> that answer received.
- recommend latency: uncached, live state on (the users get live tails first) vs off, two servers side by
  side: one interleaved single stream (each request to every server in turn, so the shared box's load hits
  all alike; an A/A control of two identical live-off servers gives the noise floor), then
  freshrec.tools.bench.serving's open-loop sweep on each.
- durability: serving (2 workers) on a Redis of its own; an open-loop client posts batches of unique
  event_ids, retrying the same ids until acknowledged, while serving is killed (-9, the whole process group)
  and restarted ``kills`` times and Redis once. The landing stream then lands the log and every landed
  event_id is counted: lost (acknowledged, absent) and doubled must be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from freshrec.core.errors import StageFailed
from freshrec.core.layout import Layout
from freshrec.core.settings import Settings
from freshrec.tools.bench.loadgen import closed_loop, encode_posts, interleaved_single_stream, open_loop
from freshrec.tools.bench.processes import free_port, stop, wait_ready
from freshrec.tools.bench.reports import scratch
from freshrec.tools.bench.serving import _served_state, measure_server

HOST = "127.0.0.1"
INGEST_TARGETS = {1: 3000.0, 100: 20000.0}  # batch size -> accepted events/s per worker (fsync on)
VISIBLE_P99_MS = 50.0
RECOMMEND_P99_MS = 10.0
LIVE_OVER_STATIC_P99 = 1.25
RECOMMEND_RATES = [250, 500, 1000, 1500, 2000, 3000, 4000]
K = 10


def _target(value: float | None, target: float, higher_is_better: bool = True) -> dict:
    met = value is not None and (value >= target if higher_is_better else value <= target)
    return {"value": None if value is None else round(float(value), 4), "target": target, "met": bool(met)}


def _pcts(values_ms: list[float] | np.ndarray) -> dict:
    a = np.asarray(values_ms, dtype=np.float64)
    if not a.size:
        return {"n": 0}
    return {"n": int(a.size), **{f"p{q}_ms": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99)},
            "max_ms": round(float(a.max()), 3)}


@dataclass
class _World:
    """The scratch home: what servers there run with, and what the model and snapshot know."""

    home: Path
    env: dict[str, str]
    items: list[str]
    users: list[str]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    namespaces: set[tuple[str, str]] = field(default_factory=set)  # (store URL, namespace) to drop afterwards

    def server_env(self, store_url: str | None, kind: str, **settings: str) -> dict[str, str]:
        """A namespace of its own per kind of server: a shared Redis keeps no trace of the run."""
        namespace = f"bench-{kind}-{self.tag}"
        env = {**self.env, "FRESHREC_ONLINE__NAMESPACE": namespace, **settings}
        if store_url:
            env["FRESHREC_ONLINE__STORE_URL"] = store_url
            self.namespaces.add((store_url, namespace))
        return env


@contextlib.contextmanager
def _world(home: Path) -> Iterator[_World]:
    settings = Settings(home=home)
    bundle, snapshot, _ = _served_state(settings)
    with scratch(settings, "realtime-ops-") as work:
        online = Layout(work).online
        online.parent.mkdir(parents=True)
        online.symlink_to(Layout(home).online, target_is_directory=True)
        # Only what the bench sets reaches its servers (as the other benches do), plus a registry they share.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FRESHREC_", "AIRFLOW", "PROMETHEUS_MULTIPROC"))}
        env.update(FRESHREC_HOME=str(work), FRESHREC_SPARK_MASTER=os.environ.get("FRESHREC_SPARK_MASTER", "local[2]"))
        if os.environ.get("FRESHREC_REGISTRY_URL"):
            env["FRESHREC_REGISTRY_URL"] = os.environ["FRESHREC_REGISTRY_URL"]
        else:
            with sqlite3.connect(f"file:{home / 'registry.db'}?mode=ro", uri=True) as src, \
                    sqlite3.connect(work / "registry.db") as dst:
                src.backup(dst)
        items = json.loads((bundle / "vocab.json").read_text())["items"]
        users = pq.read_table(snapshot / "users.parquet", columns=["user_id"]).column("user_id").to_pylist()
        world = _World(work, env, [str(i) for i in items], [str(u) for u in users])
        try:
            yield world
        finally:
            from freshrec.tools.bench.processes import drop_namespace

            for store_url, namespace in world.namespaces:
                drop_namespace(store_url, namespace)


class _Process:
    """A subprocess in a session of its own, so ``kill`` takes its children (uvicorn's workers) with it."""

    def __init__(self, name: str, port: int, command: list[str], env: dict[str, str], log: Path,
                 ready: Callable[[_Process], None]) -> None:
        self.name, self.port, self.command, self.env, self.log, self._ready = name, port, command, env, log, ready
        self.process: subprocess.Popen | None = None

    @property
    def popen(self) -> subprocess.Popen:
        if self.process is None:
            raise StageFailed(f"{self.name} was not started")
        return self.process

    def tail(self) -> str:
        return f"{self.name}: {self.log.read_text(errors='replace')[-3000:]}" if self.log.exists() else self.name

    def start(self) -> _Process:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self._ready(self)
        return self

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop(self.process)

    def __enter__(self) -> _Process:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(world: _World, env: dict[str, str], workers: int = 1) -> _Process:
    port = free_port()
    return _Process("serve", port, [sys.executable, "-m", "freshrec.cli", "serve", "--host", HOST, "--port", str(port),
                                    "--workers", str(workers)], env, world.home / f"serve-{port}.log",
                    lambda p: wait_ready(p.popen, f"http://{HOST}:{port}", 180, p.tail))


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


def _post(port: int, path: str, body: dict, timeout_s: float = 10.0) -> tuple[int, dict]:
    """One request on a connection of its own (no pooled connection can hide a replica's state)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request("POST", path, orjson.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        return response.status, (orjson.loads(raw) if raw else {})
    finally:
        conn.close()


def _items(status: int, body: dict) -> list[str] | None:
    return [i["item_id"] for i in body.get("items", [])] if status == 200 else None


def _event(user: str, item: str, event_id: str | None = None) -> dict:
    return {"user_id": user, "item_id": item, "event_type": "click", "value": 1.0,
            **({"event_id": event_id} if event_id else {})}


def _ingestion_run(port: int, world: _World, batch: int, connections: int, duration_s: float, rng) -> dict:
    def event() -> dict:
        return _event(f"ingest-{world.tag}-{rng.integers(10_000)}", world.items[rng.integers(len(world.items))])

    bodies = [orjson.dumps({"events": [event() for _ in range(batch)]}) for _ in range(512)]
    requests = encode_posts(HOST, "/v1/events", bodies)
    asyncio.run(closed_loop(HOST, port, requests, connections, 1.0))  # warm-up
    before = _metric(port, "freshrec_events_accepted_total")
    closed = asyncio.run(closed_loop(HOST, port, requests, connections, duration_s))
    accepted = _metric(port, "freshrec_events_accepted_total") - before
    return {"batch": batch, "connections": connections, "accepted": int(accepted),
            "events_per_s": round(accepted / closed.duration_s, 1), "closed_loop": closed.summary(), "requests": requests}


def measure_ingestion(home: Path, store_url: str | None, *, duration_s: float = 5.0) -> dict:
    runs, targets, rng = {}, {}, np.random.default_rng(0)
    with _world(home) as world:
        for fsync in ("on", "off"):
            env = world.server_env(store_url, f"ingest-{fsync}", FRESHREC_SERVING__LOG_FSYNC=str(fsync == "on").lower())
            with _serve(world, env) as server:
                for batch, connections in ((1, 64), (100, 8)):
                    run = _ingestion_run(server.port, world, batch, connections, duration_s, rng)
                    requests = run.pop("requests")
                    if fsync == "on":  # the target offered open loop: sustained = every request answered 200 in time
                        target = INGEST_TARGETS[batch]
                        run["open_loop_at_target"] = asyncio.run(open_loop(
                            HOST, server.port, requests, target / batch, duration_s, connections)).summary()
                        targets[f"events_per_s_batch{batch}_fsync"] = _target(run["events_per_s"], target)
                    runs[f"batch{batch}_fsync_{fsync}"] = run
    return {"store": store_url or "embedded", "workers": 1, "duration_s": duration_s, "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(), "runs": runs, "targets": targets}


def _visibility_try(a: int, b: int, user: str, poll_s: float) -> dict:
    """Cold list from B, click its first item on A, ask B on new connections until the click shows."""
    recommend = {"user_id": user, "k": K, "exclude_seen": True}
    cold = _items(*_post(b, "/v1/recommend", recommend))
    if not cold:
        raise StageFailed(f"replica B gave no cold-start list for {user}")
    sent = time.perf_counter()
    status, body = _post(a, "/v1/events", {"events": [_event(user, cold[0])]})
    acked = time.perf_counter()
    out = {"accepted": status == 200 and body.get("accepted") == 1, "ack_ms": (acked - sent) * 1000, "answers": 0}
    while out["accepted"] and time.perf_counter() - acked < poll_s:
        asked = time.perf_counter()
        got = _items(*_post(b, "/v1/recommend", recommend))
        out["answers"] += 1
        out.setdefault("read_ms", (time.perf_counter() - asked) * 1000)
        if got is not None and cold[0] not in got and got != cold:
            out["visible_ms"] = (time.perf_counter() - sent) * 1000
            break
    return out


def measure_visibility(home: Path, store_url: str | None, tries: int = 200, *, warmup: int = 5,
                       poll_s: float = 2.0) -> dict:
    with _world(home) as world:
        env = world.server_env(store_url, "visible")
        with _serve(world, env) as a, _serve(world, env) as b:
            users = [f"visible-{world.tag}-{n}" for n in range(warmup + tries)]
            assert not set(users) & set(world.users)
            results = [_visibility_try(a.port, b.port, user, poll_s) for user in users]
    results = results[warmup:]
    visible = [r for r in results if "visible_ms" in r]
    at_once = sum(r["answers"] == 1 for r in visible)
    latency = _pcts([r["visible_ms"] for r in visible])
    return {
        "store": store_url or "embedded", "replicas": 2, "tries": tries,
        "check": "B's list for a user unknown to the snapshot, after that user clicked the first item of B's cold-start "
                 "list on A: visible = the item is gone and the list differs from the cold-start one",
        "visible_at_once": at_once, "visible_later": len(visible) - at_once,
        "never_visible": sum(r["accepted"] and "visible_ms" not in r for r in results),
        "post_not_accepted": sum(not r["accepted"] for r in results), "event_to_visible": latency,
        "post_ack": _pcts([r["ack_ms"] for r in results]),
        "read_on_b": _pcts([r["read_ms"] for r in results if "read_ms" in r]),
        "targets": {"visible_at_once_share": _target(at_once / tries if tries else None, 1.0),
                    "event_to_visible_p99_ms": _target(latency.get("p99_ms"), VISIBLE_P99_MS, higher_is_better=False)},
    }


def _post_live_tails(port: int, users: list[str], world: _World, per_user: int, rng) -> None:
    events = [_event(u, world.items[rng.integers(len(world.items))]) for u in users for _ in range(per_user)]
    for start in range(0, len(events), 1000):
        chunk = events[start:start + 1000]
        status, body = _post(port, "/v1/events", {"events": chunk})
        if status != 200 or body["accepted"] != len(chunk):
            raise StageFailed(f"live tails were not written ({status}: {body})")


def _interleaved_single_stream(ports: dict[str, int], requests: list[bytes], duration_s: float) -> dict:
    """Every request to every server in turn (:func:`interleaved_single_stream`): the box's load, which moves
    p99 by tens of percent from one second to the next here, hits all servers alike."""
    for port in ports.values():
        asyncio.run(closed_loop(HOST, port, requests, 1, 1.0))  # warm-up
    results = asyncio.run(interleaved_single_stream(HOST, ports, requests, duration_s))
    failed = {name: dict(r.statuses) for name, r in results.items() if set(r.statuses) != {200}}
    if failed:
        raise StageFailed(f"recommend answered other than 200 during the latency run: {failed}")
    return {name: _pcts(r.latencies_ms) for name, r in results.items()}


def measure_recommend_latency(home: Path, store_url: str | None, *, users: int = 200, events_per_user: int = 5,
                              single_stream_s: float = 60.0, duration_s: float = 5.0,
                              rates: list[int] | None = None) -> dict:
    rng = np.random.default_rng(1)
    with _world(home) as world:
        queried = [str(u) for u in rng.choice(world.users, size=min(users, len(world.users)), replace=False)]
        bodies = [orjson.dumps({"user_id": u, "k": K, "exclude_seen": True}) for u in queried]
        uncached = {"FRESHREC_SERVING__CACHE_TTL_S": "0"}
        off_env = world.server_env(store_url, "latency", **uncached, FRESHREC_ONLINE__ENABLED="false")
        # A second live-off server is the control: the p99 ratio of two identical servers is the noise floor
        # of the on/off ratio (all servers are timed on the same interleaved stream of requests).
        # With Redis, a third live-on server runs with the client-side tail cache off: every request then
        # reads its tail from Redis (the figure a deployment whose users never repeat a request would see).
        no_tail_cache = {"FRESHREC_ONLINE__CLIENT_CACHE_EVENTS": "0"}
        with contextlib.ExitStack() as stack:
            on = stack.enter_context(_serve(world, world.server_env(store_url, "latency", **uncached)))
            off = stack.enter_context(_serve(world, off_env))
            control = stack.enter_context(_serve(world, off_env))
            ports = {"on": on.port, "off": off.port, "off_control": control.port}
            if store_url:
                ports["on_tail_cache_off"] = stack.enter_context(
                    _serve(world, world.server_env(store_url, "latency", **uncached, **no_tail_cache))).port
            _post_live_tails(on.port, queried, world, events_per_user, rng)
            servers = {"on": on, "off": off}
            single = _interleaved_single_stream(ports, encode_posts(HOST, "/v1/recommend", bodies), single_stream_s)
            tails = _metric(on.port, "freshrec_live_tail_events_sum"), _metric(on.port, "freshrec_live_tail_events_count")
            tail_cache = httpx.get(f"http://{HOST}:{on.port}/v1/models", timeout=10).json()["online"].get("tail_cache")
            with tqdm(total=0, disable=True) as progress:
                sweeps = {name: measure_server(server.port, bodies, rates or RECOMMEND_RATES, duration_s,
                                               RECOMMEND_P99_MS, 64, progress) for name, server in servers.items()}
    ratio = single["on"]["p99_ms"] / single["off"]["p99_ms"] if single["off"].get("p99_ms") else None
    ratio_no_tail_cache = (single["on_tail_cache_off"]["p99_ms"] / single["off"]["p99_ms"]
                           if "on_tail_cache_off" in single and single["off"].get("p99_ms") else None)
    noise = single["off_control"]["p99_ms"] / single["off"]["p99_ms"] if single["off"].get("p99_ms") else None
    p50_ratio = single["on"]["p50_ms"] / single["off"]["p50_ms"] if single["off"].get("p50_ms") else None
    return {
        "store": store_url or "embedded", "workers": 1, "cache": "off", "users": len(queried),
        "live_events_per_user": events_per_user,
        "mean_live_tail_per_request": round(tails[0] / tails[1], 2) if tails[1] else 0,
        # Redis: the worker's client-side tail cache during the single stream (each user is asked again
        # while their tail is unchanged, as a user paging or refreshing would); None for the embedded store.
        "tail_cache": tail_cache,
        "single_stream": single, "single_stream_s": single_stream_s, "single_stream_method": "interleaved",
        "p50_live_over_off": round(p50_ratio, 4) if p50_ratio else None,
        "p99_control_over_off": round(noise, 4) if noise else None,
        "p99_live_tail_cache_off_over_off": round(ratio_no_tail_cache, 4) if ratio_no_tail_cache else None,
        "max_rate_within_slo": {name: s["max_rate_within_slo"] for name, s in sweeps.items()},
        "sweeps": {name: {"closed_loop": s["closed_loop"], "open_loop": s["open_loop"]} for name, s in sweeps.items()},
        "slo_p99_ms": RECOMMEND_P99_MS, "load_average": os.getloadavg(),
        "targets": {"p99_live_over_off": _target(ratio, LIVE_OVER_STATIC_P99, higher_is_better=False)},
    }


@dataclass
class _Ledger:
    """What the durability client saw: the acknowledged ids, every answer by the time its request was sent,
    and the chaos timeline."""

    acked: set[str] = field(default_factory=set)
    unacked: list[str] = field(default_factory=list)
    answers: list[tuple[float, str, str]] = field(default_factory=list)  # (sent at, route, status or error)
    phases: list[tuple[float, str]] = field(default_factory=lambda: [(0.0, "running")])  # (from, phase)
    drain_until: float = float("inf")  # outstanding batches are retried until then

    def mark(self, phase: str) -> None:
        self.phases.append((time.monotonic(), phase))

    async def send(self, client: httpx.AsyncClient, route: str, **request) -> httpx.Response | None:
        sent = time.monotonic()
        try:
            r = await client.post(f"/v1/{route}", **request)
        except httpx.HTTPError as exc:  # serving killed mid-request: the answer is lost
            self.answers.append((sent, route, type(exc).__name__))
            return None
        self.answers.append((sent, route, f"{r.status_code}{'+retry-after' if 'retry-after' in r.headers else ''}"))
        return r

    def by_phase(self, route: str) -> dict[str, dict[str, int]]:
        out: dict[str, Counter] = {}
        for sent, r, status in self.answers:
            if r == route:
                out.setdefault(next(p for t, p in reversed(self.phases) if t <= sent), Counter())[status] += 1
        return {phase: dict(counts) for phase, counts in out.items()}


async def _post_until_acked(client: httpx.AsyncClient, ids: list[str], body: bytes, ledger: _Ledger) -> None:
    delay = 0.1
    while time.monotonic() < ledger.drain_until:
        r = await ledger.send(client, "events", content=body, headers={"Content-Type": "application/json"})
        if r is not None and r.status_code == 200:
            rejected = {x["index"] for x in r.json()["rejected"]}
            ledger.acked.update(i for n, i in enumerate(ids) if n not in rejected)
            return
        await asyncio.sleep(delay)  # 503, error or lost answer: the same ids again, later
        delay = min(1.0, delay * 2)
    ledger.unacked.extend(ids)


async def _durability_client(port: int, ledger: _Ledger, stop_sending: threading.Event, rate: float, batch: int,
                             world: _World, drain_s: float) -> int:
    """Open loop: batch i is due at i * batch / rate s, whatever became of the earlier ones; /v1/recommend is
    probed throughout on a pool of its own. Returns the events sent."""
    rng = np.random.default_rng(2)
    url = f"http://{HOST}:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=5.0, limits=httpx.Limits(max_connections=64)) as client, \
            httpx.AsyncClient(base_url=url, timeout=5.0) as prober:
        async def probe() -> None:
            """One probe every 50 ms whatever became of the earlier ones: a slow answer must not leave a chaos
            phase unprobed."""
            pending: set[asyncio.Task] = set()
            while not stop_sending.is_set():
                user = world.users[rng.integers(len(world.users))]
                task = asyncio.create_task(ledger.send(prober, "recommend", json={"user_id": user, "k": K}))
                pending.add(task)
                task.add_done_callback(pending.discard)
                await asyncio.sleep(0.05)
            await asyncio.gather(*pending)

        tasks, sent, start = [asyncio.create_task(probe())], 0, time.monotonic()
        while not stop_sending.is_set():
            await asyncio.sleep(max(0.0, start + sent * batch / rate - time.monotonic()))
            ids = [f"dur-{world.tag}-{sent}-{j}" for j in range(batch)]
            body = orjson.dumps({"events": [_event(f"dur-{world.tag}-{rng.integers(1000)}",
                                                   world.items[rng.integers(len(world.items))], i) for i in ids]})
            tasks.append(asyncio.create_task(_post_until_acked(client, ids, body, ledger)))
            sent += 1
        ledger.drain_until = time.monotonic() + drain_s
        await asyncio.gather(*tasks)
        return sent * batch


def _redis(world: _World) -> _Process:
    from freshrec.tools.bench.processes import redis_answers

    port, folder = free_port(), world.home / "redis"
    folder.mkdir(exist_ok=True)

    def ready(p: _Process) -> None:
        deadline = time.monotonic() + 30
        while not redis_answers(port=port):
            if p.popen.poll() is not None or time.monotonic() > deadline:
                raise StageFailed(f"redis-server did not answer: {p.tail()}")
            time.sleep(0.05)

    command = ["redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(folder)]
    return _Process("redis", port, command, dict(os.environ), world.home / "redis.log", ready)


def _chaos(server: _Process, redis: _Process, ledger: _Ledger, stop_sending: threading.Event, kills: int,
           live_s: float, store_down_s: float) -> list[float]:
    """kill -9 and restart serving ``kills`` times, Redis once midway; returns serving's restart times. Ends
    early when the client has stopped."""
    restarts = []
    for n in range(kills):
        if stop_sending.wait(live_s):
            break
        if n == kills // 2:
            ledger.mark("store_down")
            redis.kill()
            stop_sending.wait(store_down_s)
            redis.start()  # same port, empty (no persistence): the tails are gone, the log is not
            ledger.mark("store_back")
            stop_sending.wait(live_s)
        ledger.mark("serving_killed")
        started = time.monotonic()
        server.kill()
        server.start()
        restarts.append(round(time.monotonic() - started, 2))
        ledger.mark("running")
    stop_sending.wait(live_s)
    return restarts


def _landed_ids(world: _World) -> Counter:
    """Every event_id in the raw lake's day partitions, with how often it is there."""
    counts: Counter = Counter()
    for path in sorted(Layout(world.home).raw_events.glob("ds=*/**/*.parquet")):
        counts.update(pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist())
    return counts


def measure_durability(home: Path, rate: float = 2000, kills: int = 5, *, batch: int = 20, live_s: float = 4.0,
                       store_down_s: float = 3.0, drain_s: float = 30.0) -> dict:
    ledger, stop_sending = _Ledger(), threading.Event()
    with _world(home) as world, _redis(world) as redis:
        # The store URL goes in as a plain setting: this Redis is gone before the namespaces would be dropped.
        env = world.server_env(None, "durability", FRESHREC_ONLINE__STORE_URL=f"redis://{HOST}:{redis.port}/0")
        with _serve(world, env, workers=2) as server, ThreadPoolExecutor(1) as pool:  # stops cleanly: segments sealed
            chaos = pool.submit(_chaos, server, redis, ledger, stop_sending, kills, live_s, store_down_s)
            chaos.add_done_callback(lambda _: stop_sending.set())
            try:
                sent = asyncio.run(_durability_client(server.port, ledger, stop_sending, rate, batch, world, drain_s))
            finally:
                stop_sending.set()
            restarts = chaos.result()  # re-raises what went wrong there
        # availableNow: lands every sealed segment (dead writers' ones are sealed first), then stops.
        landing = subprocess.run([sys.executable, "-m", "freshrec.spark.landing_stream", "--home", str(world.home)],
                                 env=world.env, capture_output=True, text=True, timeout=900)
        if landing.returncode != 0:
            output = (landing.stdout + landing.stderr)[-3000:]
            raise StageFailed(f"landing_stream exited {landing.returncode}: {output}")
        landed = {i: c for i, c in _landed_ids(world).items() if i and i.startswith(f"dur-{world.tag}-")}
    lost, doubled = len(ledger.acked - landed.keys()), sum(c > 1 for c in landed.values())
    down = ledger.by_phase("recommend").get("store_down", {})
    recommend_ok = down.get("200", 0) / sum(down.values()) if down else None
    return {
        "rate_offered_events_per_s": rate, "batch": batch, "workers": 2, "kills": kills,
        "serving_restart_s": restarts, "events_sent": sent, "acknowledged": len(ledger.acked),
        "never_acknowledged": len(ledger.unacked), "landed": len(landed), "lost": lost, "doubled": doubled,
        "landed_not_acknowledged": len(landed.keys() - ledger.acked),
        "events_answers_by_phase": ledger.by_phase("events"), "recommend_answers_by_phase": ledger.by_phase("recommend"),
        "targets": {"lost": _target(lost, 0, higher_is_better=False),
                    "doubled": _target(doubled, 0, higher_is_better=False),
                    "recommend_200_share_while_store_down": _target(recommend_ok, 1.0)},
    }
