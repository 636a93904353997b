"""Edge fixtures: the serving world (real registry, int8 ONNX bundles, snapshot, uvicorn) with an exported
edge bundle, and headless chromium on the demo page. A missing browser or npm install fails, never skips."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.cdp import Browser, Page
from tests.browser.conftest import chromium  # noqa: F401  (fixture)
from tests.serving.conftest import RunningServer, World, champion, world  # noqa: F401  (fixtures)


@pytest.fixture
def edge_server(world: World, champion: str) -> Iterator[RunningServer]:  # noqa: F811
    from freshrec.pipeline.export.edge import export_edge

    export_edge(world.settings)
    with RunningServer(world.settings) as running:
        yield running


def open_demo(page: Page, url: str, user: str = "edge-test") -> None:
    page.navigate(f"{url}/edge/?user={user}")
    ready = page.evaluate("window.edgeReady")
    assert ready is True, f"the demo page did not load its bundle: {ready}"


@pytest.fixture
def demo_page(chromium: str, edge_server: RunningServer) -> Iterator[Page]:  # noqa: F811
    from freshrec.serving.edge import ORT_DIST

    assert (ORT_DIST / "ort.wasm.min.mjs").is_file(), "edge/node_modules is missing: run make install (npm ci in edge/)"
    with Browser(chromium) as page:
        open_demo(page, edge_server.url)
        yield page
