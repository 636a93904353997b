"""Fixtures for browser tests: headless chromium (installed by sysdeps when missing) and a running stack."""

from __future__ import annotations

import subprocess

import pytest

from tests.browser.cdp import find_chromium
from tests.infra.stack import REPO, LocalStack, shared_stack


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        subprocess.run(["bash", str(REPO / "infra" / "local" / "sysdeps.sh")], check=True, timeout=900)
        path = find_chromium()
    assert path, "chromium is not installed and infra/local/sysdeps.sh could not install it"
    return path


@pytest.fixture(scope="session")
def local_stack() -> LocalStack:
    stack, started = shared_stack()
    yield stack
    if started:
        stack.down()
