"""Online store fixtures: every test runs against both backends (Redis is the real server at 127.0.0.1:6379,
which this machine kind and CI run; each test gets a namespace of its own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["embedded", "redis"])
def store_settings(request: pytest.FixtureRequest, freshrec_home) -> Iterator:
    from freshrec.core.settings import load_settings

    online = {"namespace": f"test-{uuid.uuid4().hex[:10]}", "tail_length": 5}
    if request.param == "redis":
        online["store_url"] = REDIS_URL
    yield load_settings(home=freshrec_home, online=online)
