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
