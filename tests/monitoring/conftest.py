from tests.release.stack import release_world, serving  # noqa: F401 (fixtures)
