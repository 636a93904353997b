"""Online store fixtures: every test runs against both backends (Redis is the real server at 127.0.0.1:6379,
which this machine kind and CI run; each test gets a namespace of its own)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers.net import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["embedded", "redis"])
def store_settings(request: pytest.FixtureRequest, freshrec_home) -> Iterator:
    from freshrec.core.settings import load_settings

    online = {"namespace": f"test-{uuid.uuid4().hex[:10]}", "tail_length": 5}
    if request.param == "redis":
        online["store_url"] = REDIS_URL
    yield load_settings(home=freshrec_home, online=online)


class Server:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port, self.socket = folder, port, folder / "redis.sock"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", "s3cret",
             "--unixsocket", str(self.socket), "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, password="s3cret")
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, free_port())
    running.start()
    yield running
    running.kill()
