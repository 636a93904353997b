"""Shedding by queue age: while work waits for the event loop past serving.max_queue_age_ms (a standing
lag, not one pause), new requests get 503 + Retry-After before they join the queue; probes never do.

The server is real (uvicorn on its own thread); its loop is kept behind the way inline scoring of a deep
queue keeps it: every loop turn runs a callback that computes for 20 ms.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.serving.conftest import RunningServer, World

RECOMMEND = {"user_id": "u1", "k": 5}


def _compute(seconds: float) -> None:
    """Work on the CPU (not a sleep: a loop waiting on something else is not behind on its own work)."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


@contextmanager
def _loop_kept_busy(server: RunningServer, turn_s: float = 0.02) -> Iterator[None]:
    """Every turn of the server's loop holds it for ``turn_s`` until the block exits."""
    loop: asyncio.AbstractEventLoop = server.runtime.tasks[0].get_loop()
    done = threading.Event()

    def hog() -> None:
        _compute(turn_s)
        if not done.is_set():
            loop.call_soon(hog)

    loop.call_soon_threadsafe(hog)
    try:
        time.sleep(0.3)  # several windows of the lag sampler
        yield
    finally:
        done.set()
        time.sleep(0.3)


def test_a_loop_that_stays_behind_sheds_new_requests(server: RunningServer, world: World) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/v1/recommend", json=RECOMMEND).status_code == 200  # arms the sampler
        with _loop_kept_busy(server):
            shed = client.post("/v1/recommend", json=RECOMMEND)
            events = client.post("/v1/events", json={"events": [
                {"user_id": "u1", "item_id": "i1", "event_type": "click", "value": 1}]})
            probe = client.get("/healthz")
        assert shed.status_code == 503 and shed.headers["retry-after"] == "1", shed.text
        assert "waiting too long" in shed.json()["message"]
        assert events.status_code == 503  # nothing acknowledged: the client retries later
        assert probe.status_code == 200
        assert client.post("/v1/recommend", json=RECOMMEND).status_code == 200  # caught up: admitted again


def test_one_long_pause_sheds_nothing(server: RunningServer, world: World) -> None:
    """A single stall (a GC after a hot swap, say) is not a standing queue: the requests it held are served."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/v1/recommend", json=RECOMMEND).status_code == 200
        loop = server.runtime.tasks[0].get_loop()
        loop.call_soon_threadsafe(_compute, 0.2)
        time.sleep(0.05)
        assert client.post("/v1/recommend", json=RECOMMEND).status_code == 200


def test_zero_turns_age_shedding_off(world: World, champion: str) -> None:
    settings = world.settings.model_copy(
        update={"serving": world.settings.serving.model_copy(update={"max_queue_age_ms": 0.0})})
    with RunningServer(settings) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/v1/recommend", json=RECOMMEND).status_code == 200
        with _loop_kept_busy(server):
            assert client.post("/v1/recommend", json=RECOMMEND).status_code == 200
