"""Release fixtures live in tests/release/stack.py so tests/dags can use them too."""

from tests.release.stack import release_world, serving  # noqa: F401
