"""5x overload for ``freshrec bench faults``: one worker's capacity is measured (closed loop), then five times
that is offered open loop. Pass: every answer is a 200 or a 503 with Retry-After, the admitted (200)
p99 is within the serving SLO, the 503s come back in milliseconds, and the server still answers after.

The load generator is freshrec.tools.bench.loadgen's open loop, its answers told apart by status (and
whether a 503 carries Retry-After). A request that finds every connection busy waits in the generator and
its latency counts from its scheduled time: the server is charged for the queue it lets grow.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import orjson

from freshrec.tools.bench.faults_traffic import HOST, judged
from freshrec.tools.bench.faults_world import FaultWorld
from freshrec.tools.bench.loadgen import LoadResult, closed_loop, encode_posts, open_loop

OVERLOAD = 5.0
SHED_P99_MS = 10.0  # "503s come back in milliseconds"


async def _open_loop(port: int, requests: list[bytes], rate: float, duration_s: float, connections: int) -> LoadResult:
    """Request i is due at i / rate; what is still unanswered 15 s after the last is due counts as such."""
    return await open_loop(HOST, port, requests, rate, duration_s, connections, drain_timeout_s=15.0)


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values.size else None


def _capacity(world: FaultWorld, requests: list[bytes]) -> float:
    """Requests/s one worker serves with shedding off (closed loop, 8 connections): the rate the overload
    multiplies. With shedding on, a closed loop would measure its own retry storm instead."""
    with world.serve(world.env(FRESHREC_SERVING__MAX_QUEUE_AGE_MS="0")) as server:
        asyncio.run(closed_loop(HOST, server.port, requests, 4, 1.0))  # warm-up
        closed = asyncio.run(closed_loop(HOST, server.port, requests, 8, 2.0))
    return round(closed.statuses[200] / closed.duration_s, 1)


def _unshed(world: FaultWorld, requests: list[bytes], rate: float, duration_s: float, connections: int) -> dict:
    """The same overload, shorter, with shedding by queue age off: what the in-flight limit alone does."""
    with world.serve(world.env(FRESHREC_SERVING__MAX_QUEUE_AGE_MS="0")) as server:
        asyncio.run(closed_loop(HOST, server.port, requests, 4, 1.0))  # warm-up
        return {"duration_s": duration_s, **_summary(asyncio.run(_open_loop(server.port, requests, rate, duration_s,
                                                                            connections)))}


def _summary(run: LoadResult) -> dict:
    ok, shed = run.latencies_of(200), run.latencies_of(503)
    sent = run.latencies_ms.size + run.unfinished
    return {"sent": sent, "unanswered": run.unfinished, "statuses": {str(s): n for s, n in run.statuses.items()},
            "shed_with_retry_after": run.retry_after[503], "admitted_share": round(ok.size / max(1, sent), 3),
            "admitted_ms": {"p50": _pct(ok, 50), "p99": _pct(ok, 99), "max": _pct(ok, 100)},
            "shed_ms": {"p50": _pct(shed, 50), "p99": _pct(shed, 99)}}


def overload(world: FaultWorld, duration_s: float, slo_ms: float = 10.0, connections: int = 256) -> dict:
    """One worker (the product's default settings) at five times the rate it sustains; the same server at
    a fifth of that rate first, as the box's baseline (a shared box can miss the SLO unloaded)."""
    bodies = [orjson.dumps({"user_id": u, "k": 10}) for u in world.users]
    requests = encode_posts(HOST, "/v1/recommend", bodies)
    capacity = _capacity(world, requests)
    unshed = _unshed(world, requests, OVERLOAD * capacity, min(2.0, duration_s), connections)
    with world.serve() as server:
        asyncio.run(closed_loop(HOST, server.port, requests, 4, 1.0))  # warm-up
        baseline = asyncio.run(_open_loop(server.port, requests, capacity / OVERLOAD, min(2.0, duration_s), 16))
        run = asyncio.run(_open_loop(server.port, requests, OVERLOAD * capacity, duration_s, connections))
        after = httpx.post(f"http://{HOST}:{server.port}/v1/recommend", json={"user_id": world.users[0]}, timeout=10)
        alive = server.popen.poll() is None and after.status_code == 200
    ok, shed = run.latencies_of(200), run.latencies_of(503)
    result = {"capacity_rps": capacity, "offered_rps": round(OVERLOAD * capacity, 1), "duration_s": duration_s,
              "connections": connections, **_summary(run), "slo_p99_ms": slo_ms,
              "baseline_at_a_fifth_of_capacity": _summary(baseline), "without_age_shedding": unshed,
              "server_alive_after": alive}
    return judged(result, only_200_or_503=set(run.statuses) <= {200, 503} and not run.unfinished,
                  shed_some=shed.size > 0, every_503_has_retry_after=run.retry_after[503] == shed.size,
                  admitted_p99_within_slo=ok.size > 0 and (_pct(ok, 99) or 0) <= slo_ms,
                  shed_p99_in_milliseconds=shed.size > 0 and (_pct(shed, 99) or 0) <= SHED_P99_MS, no_crash=alive)
