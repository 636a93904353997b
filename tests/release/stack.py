"""End-to-end release fixtures: a real registry, real ONNX bundles, `freshrec serve` as a subprocess
(fault injection allowed, admin token set) and an open-loop load generator counting every failure."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from freshrec.tools.bench.processes import wait_ready
from tests.helpers.net import free_port
from tests.serving.builders import write_bundle, write_snapshot

ADMIN_TOKEN = "release-test-token"
N_ITEMS = 80
N_USERS = 400


@dataclass
class ReleaseWorld:
    home: Path
    settings: object
    registry: object
    items: list[str]
    users: list[str]
    url: str

    def register(self, run: str, seed: int) -> str:
        bundle = self.home / "models" / run
        artifacts = write_bundle(bundle, self.items, seed)
        view = self.registry.register_candidate(bundle, artifacts, {"ndcg_at_10": 0.3}, {}, {}, actor="test")
        return str(view.version)


@pytest.fixture
def release_world(freshrec_home: Path, monkeypatch: pytest.MonkeyPatch) -> ReleaseWorld:
    from freshrec.core.layout import Layout
    from freshrec.core.registry import open_registry
    from freshrec.core.settings import get_settings

    port = free_port()
    env = {
        "FRESHREC_ADMIN_TOKEN": ADMIN_TOKEN,
        "FRESHREC_ALLOW_FAULT_INJECTION": "1",
        "FRESHREC_SERVING__RECONCILE_INTERVAL_S": "0.5",
        "FRESHREC_SERVING__CACHE_TTL_S": "0",
        "FRESHREC_SERVING__PORT": str(port),
        "FRESHREC_SERVING_URL": f"http://127.0.0.1:{port}",
        "FRESHREC_LOG_LEVEL": "WARNING",
        # A shared 2-core CI box adds ~10 ms of tail noise between two windows of a few hundred
        # requests; the injected +40 ms still clears champion p99 + 15 ms.
        "FRESHREC_RELEASE__P99_SLACK_MS": "15",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = get_settings()
    rng = np.random.default_rng(11)
    items = [f"i{n}" for n in range(1, N_ITEMS + 1)]
    users = {f"u{n}": [items[j] for j in rng.choice(N_ITEMS, size=int(rng.integers(3, 15)), replace=False)]
             for n in range(N_USERS)}
    write_snapshot(Layout(settings.home).online, "snap-1", users, {it: float(N_ITEMS - n) for n, it in enumerate(items)})
    registry = open_registry(settings)
    world = ReleaseWorld(freshrec_home, settings, registry, items, list(users), settings.serving_url)
    champion = world.register("run-1", seed=1)
    registry.promote(champion, actor="test", reason="first champion")
    yield world
    registry.close()


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the test process dies, even if it is killed mid-test."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@pytest.fixture
def serving(release_world: ReleaseWorld) -> Iterator[str]:
    """`freshrec serve` in a subprocess, ready (champion loaded) before the test starts."""
    log = release_world.home / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("freshrec")), "serve"], env=os.environ.copy(),
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    try:
        wait_ready(proc, release_world.url, 90, lambda: log.read_text()[-3000:])
        yield release_world.url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Load:
    """Concurrent clients hitting /v1/recommend until stopped; every non-200 answer is recorded."""

    def __init__(self, url: str, users: list[str], clients: int = 4) -> None:
        self.url, self.users, self.clients = url, users, clients
        self.status: collections.Counter[int] = collections.Counter()
        self.variants: collections.Counter[str] = collections.Counter()
        self.failures: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                user = self.users[int(rng.integers(len(self.users)))]
                try:
                    r = http.post(f"{self.url}/v1/recommend", json={"user_id": user, "k": 10})
                    code, variant = r.status_code, (r.json().get("variant", "?") if r.status_code == 200 else "")
                except httpx.HTTPError as exc:
                    code, variant = -1, repr(exc)
                with self._lock:
                    self.status[code] += 1
                    if code == 200:
                        self.variants[variant] += 1
                    else:
                        self.failures.append((time.monotonic(), code, variant))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)

    @property
    def total(self) -> int:
        return sum(self.status.values())
