"""/docs and /redoc render in a real browser with no network but the server's: their assets are served locally."""

from __future__ import annotations

import json
import re

import httpx

from tests.browser.cdp import Browser
from tests.browser.conftest import chromium  # noqa: F401 - the fixture (installs chromium when missing)
from tests.serving.conftest import RunningServer


def test_docs_pages_load_their_assets_from_the_server(server: RunningServer, chromium: str) -> None:  # noqa: F811
    for page in ("/docs", "/redoc"):
        html = httpx.get(server.url + page, timeout=10).text
        assert "cdn." not in html and "/static-offline-docs/" in html, html
    assert httpx.get(server.url + "/static-offline-docs/swagger-ui-bundle.js", timeout=10).status_code == 200
    spec = httpx.get(server.url + "/openapi.json", timeout=10).json()
    refs = set(re.findall(r'"\$ref": ?"([^"]+)"', json.dumps(spec)))
    assert refs and refs <= {f"#/components/schemas/{name}" for name in spec["components"]["schemas"]}, refs
    with Browser(chromium) as tab:  # chromium runs with background networking off; this box has no internet
        tab.navigate(server.url + "/docs")
        operations = tab.wait_for(
            "Array.from(document.querySelectorAll('.opblock-summary-path')).map(e => e.textContent.trim())",
            timeout=60, what="Swagger UI listing the routes")
        assert {"/v1/recommend", "/v1/events", "/v1/score"} <= set(operations), json.dumps(operations)
        tab.navigate(server.url + "/redoc")
        tab.wait_for("document.querySelector('redoc .redoc-wrap') && document.body.innerText.includes('/v1/events')",
                     timeout=60, what="ReDoc rendering the API")
