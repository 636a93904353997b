"""One SparkSession for the whole test session: a JVM start costs many seconds on two cores."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from freshrec.core.settings import load_settings
    from freshrec.spark.session import build_session

    settings = load_settings(home=tmp_path_factory.mktemp("spark-home"), spark_master="local[2]", spark_driver_memory="1g")
    session = build_session(settings, "freshrec-tests", shuffle_partitions=2)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def settings(freshrec_home):
    from freshrec.core.settings import get_settings

    return get_settings()


def run_and_publish(spark, settings, first: dt.date, last: dt.date) -> dict:
    """The features job for [first, last] on the shared session, then the atomic publish; the published run."""
    from freshrec.core.layout import Layout
    from freshrec.spark.features import run_features
    from freshrec.spark.publish import publish_run

    staging = Layout(settings.home).lake / "_staging" / uuid.uuid4().hex
    run_features(spark, settings, first, last, staging)
    return publish_run(Layout(settings.home), staging)


def stage_only(spark, settings, first: dt.date, last: dt.date) -> Path:
    from freshrec.core.layout import Layout
    from freshrec.spark.features import run_features

    staging = Layout(settings.home).lake / "_staging" / uuid.uuid4().hex
    run_features(spark, settings, first, last, staging)
    return staging
