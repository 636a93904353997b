"""Fixtures for infrastructure tests: a real local stack for this folder (see stack.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.stack import LocalStack, start_stack

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """test_walkthrough first among this folder's tests (in their slots, so the package's stack starts once).

    The walkthrough is a newcomer's first half hour on a fresh `make up`. Later, the simulator's clicks (on by
    default, running while test_backfill's Spark runs take their 20 minutes) have excluded every item of the
    small test catalogue for the demo's most active users, `u1` among them, and their lists come back empty.
    """
    slots = [i for i, item in enumerate(items) if HERE in item.path.parents]
    ordered = sorted((items[i] for i in slots), key=lambda item: item.path.name != "test_walkthrough.py")
    for i, item in zip(slots, ordered, strict=True):
        items[i] = item


@pytest.fixture(scope="package")
def local_stack(request: pytest.FixtureRequest) -> LocalStack:
    # Package scope: the stack lives while this folder's tests run, not idle through the rest of the suite.
    # The whole `make up` (serving, champion, simulator) when test_walkthrough runs: it follows infra/README.md.
    full = any(item.get_closest_marker("walkthrough") for item in request.session.items)
    stack = start_stack(full=full)
    yield stack
    result = stack.down()
    stack.drop_metadata_db()
    stack.drop_online_keys()
    assert result.returncode == 0, f"make down failed:\n{result.stdout}\n{result.stderr}"
