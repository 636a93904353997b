"""A real local stack (infra/local/up.sh) for integration tests: temp FRESHREC_HOME, free ports.

One stack per test folder (tests/infra, tests/browser; a package-scoped fixture). tests/browser's runs Airflow only
(no serving tier, no bootstrap champion) over a few tiny synthetic days, with features_daily unpaused so backfills
can run. tests/infra's is the whole `make up` a newcomer gets (demo data seeded by up.sh with its ground truth,
Redis, serving, a bootstrapped champion, the four DAGs unpaused, the traffic simulator), over a smaller demo world.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.net import free_port

REPO = Path(__file__).resolve().parents[2]
UP = REPO / "infra" / "local" / "up.sh"
DOWN = REPO / "infra" / "local" / "down.sh"
USER, PASSWORD = "admin", "admin"
# Days of tiny synthetic events the stack's lake holds, from a week ago: three for the REST/CLI
# backfill test, one more for the UI's backfill form. The full stack's demo data (the 14 days that end
# yesterday) holds them too.
FIRST_DAY = dt.date.today() - dt.timedelta(days=7)
DAYS = [FIRST_DAY + dt.timedelta(days=i) for i in range(3)]
UI_DAY = FIRST_DAY + dt.timedelta(days=3)
# The full stack's demo world: up.sh's default days and settings, fewer users, items and events per day than
# its default (1500 / 600 / 8000), so seeding, the bootstrap and every Spark run stay short on a test box.
DEMO_SYNTH_ARGS = "--users 400 --items 200 --events-per-day 2500"


@dataclass
class LocalStack:
    home: Path
    airflow_port: int
    serving_port: int
    env: dict[str, str]
    up_output: str = ""  # what `make up` printed (stdout and stderr)
    up_seconds: float = 0.0
    up_days: tuple[dt.date, ...] = ()  # the UTC dates at the start and the end of `make up`

    @property
    def serving_url(self) -> str:
        return f"http://127.0.0.1:{self.serving_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    def token(self) -> str:
        response = httpx.post(f"{self.airflow_url}/auth/token", json={"username": USER, "password": PASSWORD}, timeout=30)
        response.raise_for_status()
        return response.json()["access_token"]

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.airflow_url}/api/v2", headers={"Authorization": f"Bearer {self.token()}"}, timeout=60)

    def airflow_cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(REPO / "infra" / "local" / "airflow.sh"), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )

    def down(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(DOWN)], env=self.env, capture_output=True, text=True, timeout=180)

    def drop_metadata_db(self) -> None:
        """The stack's Airflow DB lives on the local Postgres when one answers: drop it with the stack."""
        remembered = self.home / "airflow" / "metadata_db_url"
        if not remembered.is_file() or not remembered.read_text().startswith("postgresql"):
            return
        import psycopg

        name = remembered.read_text().strip().rsplit("/", 1)[1]
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


    def drop_online_keys(self) -> None:
        """A full stack keeps users' live tails in the shared local Redis under its home's namespace: delete them."""
        if not (self.home / "truth.npz").exists():  # no serving tier, no live tails
            return
        import redis

        namespace = "freshrec-" + hashlib.sha256(str(self.home).encode()).hexdigest()[:12]  # as infra/local/_common.sh
        client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=10)
        try:
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
        except redis.ConnectionError:
            pass  # no shared Redis: the stack ran its own, which make down stopped
        finally:
            client.close()


def stack_env(home: Path, airflow_port: int, serving_port: int, full: bool = False) -> dict[str, str]:
    """A clean environment: nothing of the test process's Airflow/FreshRec settings leaks into the stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FRESHREC_")) and k != "SIMULATE"}
    env.update(
        FRESHREC_HOME=str(home),
        FRESHREC_AIRFLOW_PORT=str(airflow_port),
        FRESHREC_SERVING__PORT=str(serving_port),
        FRESHREC_AIRFLOW_LOG_PORTS=f"{free_port()} {free_port()}",
        FRESHREC_UP_TIMEOUT_S="600",
        # Small days keep each Spark run short.
        FRESHREC_SPARK_DRIVER_MEMORY="1g",
    )
    if full:
        env.update(FRESHREC_DEMO_SYNTH_ARGS=DEMO_SYNTH_ARGS)
    else:
        env.update(FRESHREC_UP_SEED="0", FRESHREC_UP_SERVING="0", FRESHREC_UP_UNPAUSE="features_daily")
    return env


def start_stack(full: bool = False) -> LocalStack:
    """`make up` (infra/local/up.sh) in a fresh home: Airflow only over tiny days, or the whole stack (``full``)."""
    home = Path(tempfile.mkdtemp(prefix="freshrec-stack-"))
    airflow_port, serving_port = free_port(), free_port()
    env = stack_env(home, airflow_port, serving_port, full)
    if not full:
        _seed_tiny_days(home, env)
    started, first_day = time.monotonic(), dt.datetime.now(dt.UTC).date()
    up = subprocess.run(["bash", str(UP)], env=env, capture_output=True, text=True, timeout=1800)
    stack = LocalStack(home, airflow_port, serving_port, env, up.stdout + up.stderr, time.monotonic() - started,
                       (first_day, dt.datetime.now(dt.UTC).date()))
    if up.returncode != 0:
        stack.down()
        stack.drop_metadata_db()
        raise RuntimeError(f"make up failed (exit {up.returncode}):\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}")
    return stack


def _seed_tiny_days(home: Path, env: dict[str, str]) -> None:
    synth = subprocess.run(
        [str(REPO / ".venv" / "bin" / "freshrec"), "data", "synth", "--out", str(home / "lake" / "raw" / "events"),
         "--start", FIRST_DAY.isoformat(), "--days", str(len(DAYS) + 1), "--users", "60", "--items", "40",
         "--events-per-day", "400", "--seed", "3", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    if synth.returncode != 0:
        raise RuntimeError(f"freshrec data synth failed:\n{synth.stdout}\n{synth.stderr}")

