"""Serving fixtures: a real SQLite registry, real ONNX bundles, a real online snapshot, real uvicorn."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.net import free_port
from tests.serving.builders import write_bundle, write_snapshot

ADMIN_TOKEN = "test-admin-token"
N_ITEMS = 60
N_USERS = 40


@dataclass
class World:
    home: Path
    settings: object
    registry: object
    items: list[str]
    users: dict[str, list[str]]

    def bundle(self, run: str, seed: int, items: list[str] | None = None) -> dict[str, Path]:
        return write_bundle(self.home / "models" / run, items or self.items, seed)

    def register(self, run: str, seed: int, items: list[str] | None = None) -> str:
        artifacts = self.bundle(run, seed, items)
        view = self.registry.register_candidate(self.home / "models" / run, artifacts, {"ndcg_at_10": 0.3}, {}, {}, actor="test")
        return str(view.version)


@pytest.fixture
def world(freshrec_home: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    from freshrec.core.layout import Layout
    from freshrec.core.registry import open_registry
    from freshrec.core.settings import get_settings

    monkeypatch.setenv("FRESHREC_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("FRESHREC_ALLOW_FAULT_INJECTION", "1")
    monkeypatch.setenv("FRESHREC_SERVING__RECONCILE_INTERVAL_S", "0.2")
    monkeypatch.setenv("FRESHREC_SERVING__CACHE_TTL_S", "0")
    get_settings.cache_clear()
    settings = get_settings()
    rng = np.random.default_rng(7)
    items = [f"i{n}" for n in range(1, N_ITEMS + 1)]
    users = {f"u{n}": [items[j] for j in rng.choice(N_ITEMS, size=rng.integers(3, 12), replace=False)] for n in range(N_USERS)}
    popularity = {item: float(N_ITEMS - n) for n, item in enumerate(items)}
    write_snapshot(Layout(settings.home).online, "snap-1", users, popularity)
    return World(freshrec_home, settings, open_registry(settings), items, users)


@pytest.fixture
def champion(world: World) -> str:
    version = world.register("run-1", seed=1)
    world.registry.promote(version, actor="test", reason="first champion")
    return version


class RunningServer:
    def __init__(self, settings) -> None:
        import uvicorn

        from freshrec.serving.api import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, loop="uvloop", http="httptools",
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def runtime(self):
        return self.app.state.runtime


@pytest.fixture
def server(world: World, champion: str) -> Iterator[RunningServer]:
    with RunningServer(world.settings) as running:
        yield running


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
