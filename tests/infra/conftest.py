"""Fixtures for infrastructure tests: a real local stack for this folder (see stack.py)."""

from __future__ import annotations

import pytest

from tests.infra.stack import LocalStack, start_stack


@pytest.fixture(scope="package")
def local_stack() -> LocalStack:
    # Package scope: the stack lives while this folder's tests run, not idle through the rest of the suite.
    stack = start_stack()
    yield stack
    result = stack.down()
    stack.drop_metadata_db()
    assert result.returncode == 0, f"make down failed:\n{result.stdout}\n{result.stderr}"
