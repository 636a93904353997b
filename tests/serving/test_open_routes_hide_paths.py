"""The routes anyone can call (no token) never show FRESHREC_HOME or any absolute path, even while a version is
refused or the ingestion log fails, and no request path reaches a file outside what the app serves.

Checked against a running app whose home has a space in its name (a path a pattern may cut short)."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from freshrec.core.registry import Registry
from tests.serving.builders import served_variant
from tests.serving.conftest import RunningServer, World, admin_headers

ABSOLUTE = re.compile(r"(?<![\w.$])/(?:tmp|home|root|usr|var|work|etc|opt|srv)/")
OPEN_GETS = ("/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc", "/no-such-route",
             "/canary", "/v1/canary")


@pytest.fixture
def freshrec_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from freshrec.core.settings import get_settings

    home = tmp_path / "fresh rec home"
    home.mkdir()
    monkeypatch.setenv("FRESHREC_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def _assert_no_paths(text: str, home: Path, where: str) -> None:
    for fragment in (str(home), str(home.parent), home.name):
        assert fragment not in text, f"{where} shows {fragment!r}: {text[:500]}"
    assert not ABSOLUTE.search(text), f"{where} shows an absolute path: {ABSOLUTE.search(text)}"


def test_open_routes_hide_paths_while_a_version_is_refused(server: RunningServer, world: World,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bad = world.register("run-2", seed=2)
    (world.home / "models" / "run-2" / f"student.{served_variant()[0]}.onnx").unlink()
    monkeypatch.setattr(Registry, "_verify_before_serving", lambda *_: None)  # lost after the registry's check
    world.registry.promote(bad, actor="test", reason="missing artifact")
    refused = httpx.post(f"{server.url}/admin/reconcile", headers=admin_headers()).json()["refused"]
    assert [f["version"] for f in refused] == [bad]  # the admin answer keeps the full reason for operators
    for route in OPEN_GETS:
        r = httpx.get(f"{server.url}{route}")
        _assert_no_paths(r.text, world.home, f"GET {route} ({r.status_code})")
    assert [f["version"] for f in httpx.get(f"{server.url}/v1/models").json()["refused"]] == [bad]


def test_error_bodies_hide_paths(server: RunningServer, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    segment = world.home / "lake" / "landing" / "events" / "_open" / "segment.jsonl"

    def failing_append(*_: object) -> None:
        raise OSError(28, "No space left on device", str(segment))

    monkeypatch.setattr(server.runtime.log, "append", failing_append)
    event = {"user_id": "u1", "item_id": "i1", "event_type": "click", "value": 1}
    answers = [
        httpx.post(f"{server.url}/v1/events", json={"events": [event]}),
        httpx.post(f"{server.url}/v1/feedback", json=event),
        httpx.post(f"{server.url}/v1/recommend", content=b"{not json", headers={"content-type": "application/json"}),
        httpx.post(f"{server.url}/v1/score", json={"user_id": "u1", "item_ids": "not-a-list"}),
        httpx.post(f"{server.url}/admin/reconcile"),
    ]
    assert [r.status_code for r in answers] == [503, 503, 422, 422, 401]
    assert "could not be written" in answers[0].json()["message"]
    for r in answers:
        _assert_no_paths(r.text, world.home, f"{r.request.method} {r.request.url.path} ({r.status_code})")


@pytest.mark.parametrize("path", [
    "/static-offline-docs/../../../../../../etc/passwd",
    "/static-offline-docs/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static-offline-docs/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/../../../../etc/passwd",
    "/static-offline-docs/{home}/registry.db",
    "/static-offline-docs/../../../../../../..{home}/registry.db",
    "/v1/models/../../../../{home}/registry.db",
])
def test_no_request_path_reaches_a_file_outside_the_app(server: RunningServer, world: World, path: str) -> None:
    raw = path.format(home=str(world.home).replace(" ", "%20"))
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", raw)  # sent as written: no client-side normalisation of the dots
        response = connection.getresponse()
        body = response.read().decode("utf-8", "replace")
    finally:
        connection.close()
    assert response.status in (400, 404), (raw, response.status, body[:200])
    assert "root:" not in body and "SQLite format" not in body
    _assert_no_paths(body, world.home, f"GET {raw}")
