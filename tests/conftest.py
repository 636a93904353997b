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


def xdist_scope(nodeid: str) -> str:
    """The unit of work one xdist worker takes whole: the folder where the folder shares a stack or a
    SparkSession, else the module (module-scoped fixtures are built once)."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" and parts[1] in WHOLE_FOLDERS else path


def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN201 - xdist's scheduler type
    """`make test` runs on two pytest-xdist workers with this scheduler: xdist's loadscope by :func:`xdist_scope`.
    (xdist's own loadgroup renames node ids, which pytest 9 no longer allows: its groups are silently ignored.)"""
    from xdist.scheduler import LoadScopeScheduling

    class FolderScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return FolderScopeScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The stack folders first (in collection order, which `--no-loadscope-reorder` keeps): one worker starts the
    walkthrough's half hour at once while the other works through the rest."""
    tests = REPO / "tests"
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
