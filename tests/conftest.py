"""Shared fixtures: an isolated FRESHREC_HOME per test and one migrated Airflow home per session.

Airflow reads AIRFLOW_HOME at import time, so it is pinned here, before any test imports airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="freshrec-test-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# Tests must never touch the developer's checkout state.
for var in [k for k in os.environ if k.startswith("FRESHREC_")]:
    del os.environ[var]
# One serving worker per `freshrec serve` the tests start (the product default is one per core); the
# multi-worker path has its own test (tests/serving/test_overload_metrics.py).
os.environ["FRESHREC_SERVING__WORKERS"] = "1"


def pytest_configure(config: pytest.Config) -> None:
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)


# Folders whose tests share one package- or session-scoped resource: a `make up` stack, one SparkSession.
WHOLE_FOLDERS = ("infra", "browser", "spark_jobs")
FIRST_FOLDERS = ("infra", "browser")  # the long ones (the walkthrough's full stack) start first


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs on two pytest-xdist workers (`--dist loadgroup`). Each test goes in a group: its
    folder where the folder shares a stack or a SparkSession, else its module (module-scoped fixtures are
    built once). The stack folders come first, so one worker runs the walkthrough's half hour while the
    other works through the rest. Without xdist the marks change nothing."""
    tests = REPO / "tests"
    for item in items:
        parts = item.path.relative_to(tests).parts
        group = parts[0] if len(parts) > 1 and parts[0] in WHOLE_FOLDERS else "/".join(parts)
        item.add_marker(pytest.mark.xdist_group(group))
    rank = {name: i for i, name in enumerate(FIRST_FOLDERS)}
    items.sort(key=lambda item: rank.get(item.path.relative_to(tests).parts[0], len(rank)))


@pytest.fixture
def freshrec_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh FRESHREC_HOME; settings are rebuilt from it."""
    from freshrec.core.settings import get_settings

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FRESHREC_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The session's Airflow metadata DB, migrated once."""
    from freshrec.dags._local import ensure_airflow_db

    ensure_airflow_db()
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session")
def ml100k() -> Path:
    """Folder with ml-100k.inter/.item/.user extracted from the recbole wheel (cached outside the repo)."""
    from tests.helpers.movielens import fetch_ml100k

    return fetch_ml100k()


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """Where a test leaves files people look at (screenshots, plots); CI keeps test-artifacts/."""
    path = REPO / "test-artifacts" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path
