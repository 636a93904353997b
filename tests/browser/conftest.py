"""Fixtures for browser tests: headless chromium (installed by sysdeps when missing) and a running stack."""

from __future__ import annotations

import subprocess

import pytest

from tests.browser.cdp import find_chromium
from tests.infra.stack import REPO, LocalStack, start_stack


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        subprocess.run(["bash", str(REPO / "infra" / "local" / "sysdeps.sh")], check=True, timeout=900)
        path = find_chromium()
    assert path, "chromium is not installed and infra/local/sysdeps.sh could not install it"
    return path


@pytest.fixture(scope="package")
def local_stack() -> LocalStack:
    # Package scope: the stack lives while this folder's tests run, not idle through the rest of the suite.
    stack = start_stack()
    yield stack
    result = stack.down()
    stack.drop_metadata_db()
    assert result.returncode == 0, f"make down failed:\n{result.stdout}\n{result.stderr}"
