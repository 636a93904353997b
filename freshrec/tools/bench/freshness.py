"""``freshrec bench freshness``: a new day of events landing -> the model trained on it serving as champion.

End to end at ML-1M scale (synthetic: about 6,000 users, 3,700 items, ~1M events) through the real
user path, each stage as the `freshrec` CLI (subprocesses: the bench imports no plane):

bootstrap (not timed): synthesise `days` days into a private FRESHREC_HOME, features + retrain + release
  of the first champion, `freshrec serve` on a free port, `freshrec simulate` as steady load (clicks
  drawn from the ground truth, so the canary has an online CTR);
timed: the next day's partition is moved into the lake (t0) -> features for that day -> retrain (warm
  start) -> canary release with demo intervals -> every replica reports the new champion (t1).
Target: t1 - t0 <= 20 minutes. JSON + PNG under FRESHREC_HOME/reports/bench/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from freshrec.core.errors import NotFound, StageFailed
from freshrec.core.layout import Layout, ds_name
from freshrec.core.settings import Settings
from freshrec.tools.bench.processes import free_port, stop, wait_ready

TARGET_S = 20 * 60
START = dt.date(2026, 1, 1)
out = Console()


@dataclass(frozen=True)
class FreshnessConfig:
    days: int = 28
    users: int = 6000
    items: int = 3700
    events_per_day: int = 36_000          # ~1M events over 28 days, the size of ML-1M
    interval_s: float = 10.0              # demo canary interval
    steps: str = "25,100"
    min_requests: int = 100
    load_rate: float = 40.0               # simulated requests per second during the release
    seed: int = 42
    env: dict[str, str] = field(default_factory=dict)  # extra FRESHREC_* for the bench home (epochs, ...)


@dataclass
class Stage:
    name: str
    seconds: float
    timed: bool
    detail: str = ""


class Bench:
    def __init__(self, settings: Settings, config: FreshnessConfig) -> None:
        self.config = config
        self.home = Layout(settings.home).reports / "bench" / "freshness-home"
        self.reports = Layout(settings.home).reports / "bench"
        self.logs = self.home / "bench-logs"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FRESHREC_", "AIRFLOW"))},
            "FRESHREC_HOME": str(self.home),
            "FRESHREC_SERVING_URL": self.url,
            "FRESHREC_SERVING__PORT": str(self.port),
            "FRESHREC_ADMIN_TOKEN": secrets.token_urlsafe(16),
            **config.env,
        }
        self.stages: list[Stage] = []
        self.cli = str(Path(sys.executable).with_name("freshrec"))

    def run_cli(self, name: str, args: list[str], *, timed: bool) -> str:
        log = self.logs / f"{len(self.stages):02d}-{name}.log"
        out.print(f"[bold]{name}[/] freshrec {' '.join(args)}")
        start = time.perf_counter()
        with log.open("w") as fh:
            result = subprocess.run([self.cli, *args], env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        self.stages.append(Stage(name, seconds, timed, " ".join(args)))
        out.print(f"  {seconds:.1f} s")
        if result.returncode != 0:
            raise StageFailed(f"stage {name} exited {result.returncode}; log: {log}\n"
                              + log.read_text()[-2000:])
        return log.read_text()

    @contextmanager
    def background(self, name: str, args: list[str]) -> Iterator[subprocess.Popen]:
        log = (self.logs / f"bg-{name}.log").open("w")
        proc = subprocess.Popen([self.cli, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop(proc)
            log.close()

    def wait_ready(self, proc: subprocess.Popen, timeout_s: float = 180) -> None:
        wait_ready(proc, self.url, timeout_s, lambda: f"freshrec serve, log under {self.logs}", StageFailed)

    def champion_served(self) -> str | None:
        body = httpx.get(f"{self.url}/v1/models", timeout=5).json()
        return next((str(v["version"]) for v in body.get("versions", []) if v.get("role") == "champion"), None)

    def run(self) -> dict[str, Any]:
        cfg = self.config
        shutil.rmtree(self.home, ignore_errors=True)
        self.logs.mkdir(parents=True)
        raw = Layout(self.home).raw_events
        staged = self.home / "incoming"
        new_day = START + dt.timedelta(days=cfg.days)
        world = ["--users", str(cfg.users), "--items", str(cfg.items), "--events-per-day", str(cfg.events_per_day),
                 "--seed", str(cfg.seed), "--no-progress"]
        self.run_cli("synth history", ["data", "synth", "--out", str(raw), "--start", START.isoformat(),
                                       "--days", str(cfg.days), "--truth", str(self.home / "truth.npz"), *world],
                     timed=False)
        # Same seed and world: the day a full run would have produced, held back until it "lands".
        self.run_cli("synth new day", ["data", "synth", "--out", str(staged), "--start", new_day.isoformat(),
                                       "--days", "1", *world], timed=False)
        self.run_cli("bootstrap pipeline", ["pipeline", "run"], timed=False)
        with self.background("serve", ["serve"]) as server:
            self.wait_ready(server)
            first = self.champion_served()
            with self.background("simulate", ["simulate", "--rate", str(cfg.load_rate), "--duration", "7200",
                                              "--truth", str(self.home / "truth.npz"), "--url", self.url]):
                t0 = time.perf_counter()
                os.replace(staged / ds_name(new_day), raw / ds_name(new_day))
                self.run_cli("features", ["pipeline", "run", "--stages", "features", "--from", new_day.isoformat(),
                                          "--to", new_day.isoformat()], timed=True)
                self.run_cli("retrain", ["pipeline", "run", "--stages", "retrain"], timed=True)
                candidate = self._newest_candidate()
                self.run_cli("release", ["release", "run", candidate, "--interval", str(cfg.interval_s), "--steps",
                                         cfg.steps, "--min-requests", str(cfg.min_requests)], timed=True)
                while self.champion_served() != candidate:
                    if time.perf_counter() - t0 > TARGET_S * 3:
                        raise StageFailed(f"version {candidate} never became the served champion")
                    time.sleep(0.2)
                total = time.perf_counter() - t0
        return {
            "config": asdict(cfg), "new_day": new_day.isoformat(), "first_champion": first,
            "new_champion": candidate, "end_to_end_s": total, "target_s": TARGET_S, "met": total <= TARGET_S,
            "stages": [asdict(s) for s in self.stages],
        }

    def _newest_candidate(self) -> str:
        text = self.run_cli("registry list", ["registry", "list", "--json"], timed=False)
        self.stages.pop()  # a lookup, not a stage
        versions = json.loads(text[text.index("["):])
        candidates = [v for v in versions if v.get("state") == "candidate"]
        if not candidates:
            raise NotFound("retrain produced no candidate (gates failed?); see the retrain log")
        return str(max(int(v["version"]) for v in candidates))


def write_report(result: dict[str, Any], folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "freshness.json"
    path.write_text(json.dumps(result, indent=2))
    timed = [s for s in result["stages"] if s["timed"]]
    fig, ax = plt.subplots(figsize=(8, 2.6))
    left = 0.0
    for stage, color in zip(timed, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        ax.barh([0], [stage["seconds"] / 60], left=left, color=color, label=f"{stage['name']} {stage['seconds'] / 60:.1f} min")
        left += stage["seconds"] / 60
    ax.axvline(result["target_s"] / 60, color="black", linestyle="--", label="target 20 min")
    ax.set_yticks([])
    ax.set_xlabel("minutes from the new day landing")
    ax.set_title(f"freshness: {result['end_to_end_s'] / 60:.1f} min to the new champion")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=100)
    plt.close(fig)
    return path


def run(settings: Settings, **options: Any) -> Path:
    config = FreshnessConfig(**options)
    result = Bench(settings, config).run()
    out.print(f"[bold]{result['end_to_end_s'] / 60:.1f} min[/] from landing to champion "
              f"({'met' if result['met'] else 'missed'} the 20 min target)")
    return write_report(result, Layout(settings.home).reports / "bench")
