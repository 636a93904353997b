"""The plan of one features run (days, staging dir) and how it reaches Spark and the lake.

freshrec.pipeline never imports freshrec.spark: the job is *submitted* (spark-submit through the Airflow Spark provider,
or ``python -m`` here), and publication runs ``python -m freshrec.spark.publish`` in a subprocess, like the
landing of the ingestion log (``python -m freshrec.spark.landing_stream``) that comes before a run.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from freshrec.core.errors import ConfigError, FreshRecError, InvalidInput
from freshrec.core.eventlog import SEGMENT_SUFFIX
from freshrec.core.layout import Layout
from freshrec.core.settings import Settings


def features_application() -> str:
    """The installed job's file, for spark-submit (found without importing it: the pipeline never imports pyspark)."""
    spec = importlib.util.find_spec("freshrec.spark.features")
    if spec is None or spec.origin is None:
        raise ConfigError("freshrec.spark.features is not installed: reinstall FreshRec")
    return spec.origin


class PublishFailed(FreshRecError):
    """Moving a validated run into the lake failed; the previous partitions are still the live ones."""


class LandingFailed(FreshRecError):
    """Landing the ingestion log failed; its checkpoint makes the next attempt pick up where this one stopped."""


@dataclass(frozen=True)
class FeaturesPlan:
    from_ds: str
    to_ds: str
    staging: str
    manual: bool  # days came from the run conf (backfill/CLI): no waiting for landing

    @property
    def days(self) -> list[dt.date]:
        first, last = dt.date.fromisoformat(self.from_ds), dt.date.fromisoformat(self.to_ds)
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeaturesPlan:
        return cls(**{k: data[k] for k in ("from_ds", "to_ds", "staging", "manual")})


def _parse_day(value: object, name: str) -> dt.date | None:
    if value in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(f"{name}: expected YYYY-MM-DD, got {value!r}") from None


def plan_run(settings: Settings, run_id: str, from_ds: object, to_ds: object, scheduled_day: dt.date) -> FeaturesPlan:
    """Days from the run conf when given (both or one), else the scheduled day (the @daily/backfill case)."""
    first, last = _parse_day(from_ds, "from_ds"), _parse_day(to_ds, "to_ds")
    manual = first is not None or last is not None
    first = first or last or scheduled_day
    last = last or first
    if last < first:
        raise InvalidInput(f"to_ds {last} is before from_ds {first}")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    staging = Layout(settings.home).lake / "_staging" / f"features-{safe}"
    return FeaturesPlan(first.isoformat(), last.isoformat(), str(staging), manual)


def raw_partition_landed(settings: Settings, day: dt.date) -> bool:
    """A partition counts as landed when its folder holds at least one data file."""
    folder = Layout(settings.home).raw_partition(day)
    return folder.is_dir() and any(p.is_file() and not p.name.startswith(("_", ".")) for p in folder.rglob("*"))


def spark_environment(settings: Settings) -> dict[str, str]:
    """What spark-submit needs to find itself and run our venv's interpreter with our settings."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "FRESHREC_HOME": str(settings.home),
    }


def run_spark_module(settings: Settings, module: str, arguments: list[str],
                     failure: Callable[[str], FreshRecError]) -> dict:
    """``python -m <module> <arguments>`` with Spark's environment; its summary (the last stdout line, JSON), or
    ``failure(the end of its stderr)`` raised when it exits non-zero or runs past ``settings.spark_job_timeout_s``.

    The job runs in its own process group, so a job past its time is killed with its JVM (a wedged streaming query
    must not hold a task forever): the landing's checkpoint, the publish's staging folder and the training input's
    work folder make the next attempt safe.
    """
    env = {**os.environ, **spark_environment(settings)}
    timeout = settings.spark_job_timeout_s
    with subprocess.Popen([sys.executable, "-m", module, *arguments], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise failure(f"{module} ran past spark_job_timeout_s={timeout:g} s and was killed; "
                          f"the end of its stderr: {stderr[-1500:]}") from None
    if proc.returncode != 0:
        raise failure(stderr[-2000:])
    return json.loads(stdout.strip().splitlines()[-1])


def spark_arguments(plan: FeaturesPlan) -> list[str]:
    return ["--from", plan.from_ds, "--to", plan.to_ds, "--staging", plan.staging]


def submission(settings: Settings, plan: FeaturesPlan) -> dict:
    """The plan plus what the SparkSubmitOperator needs (JSON-safe, it travels through XCom)."""
    return {**plan.to_dict(), "application": features_application(), "application_args": spark_arguments(plan),
            "spark_env": spark_environment(settings), "driver_memory": settings.spark_driver_memory}


def run_features_locally(settings: Settings, plan: FeaturesPlan) -> None:
    """The same job without spark-submit (``python -m``), for callers without Airflow."""
    env = {**os.environ, **spark_environment(settings)}
    cmd = [sys.executable, "-m", "freshrec.spark.features", *spark_arguments(plan)]
    subprocess.run(cmd, env=env, check=True)


def landing_pending(settings: Settings) -> bool:
    """Whether the ingestion log has segments: sealed ones to land, or open ones whose writer may have died."""
    layout = Layout(settings.home)
    return any(folder.is_dir() and any(folder.glob(f"*{SEGMENT_SUFFIX}")) for folder in (layout.landing, layout.landing_open))


def land_stream(settings: Settings) -> dict:
    """Land what the ingestion log holds now (the landing job with availableNow); its summary, or why it was
    skipped. Without segments no Spark application is started."""
    if not landing_pending(settings):
        return {"batches": [], "events": {}, "skipped": "no segments in the ingestion log"}
    return run_spark_module(settings, "freshrec.spark.landing_stream", ["--home", str(settings.home)],
                            lambda stderr: LandingFailed(f"landing the ingestion log failed: {stderr}"))


def publish(settings: Settings, plan: FeaturesPlan) -> dict:
    """Publish a validated staging directory atomically (partition by partition, snapshot last)."""
    return run_spark_module(settings, "freshrec.spark.publish", ["--home", str(settings.home), "--staging", plan.staging],
                            lambda stderr: PublishFailed(f"publishing {plan.staging} failed: {stderr}"))


def discard(plan: FeaturesPlan) -> None:
    """Drop a staging directory that will not be published (validation stopped the run)."""
    shutil.rmtree(plan.staging, ignore_errors=True)
