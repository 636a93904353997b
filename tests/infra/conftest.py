"""Fixtures for infrastructure tests: one real local stack per session (see stack.py)."""

from __future__ import annotations

import pytest

from tests.infra.stack import LocalStack, shared_stack


@pytest.fixture(scope="session")
def local_stack() -> LocalStack:
    stack, started = shared_stack()
    yield stack
    if started:
        stack.down()
