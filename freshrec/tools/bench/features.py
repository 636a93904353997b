"""``freshrec bench features``: the Spark features job vs the DuckDB implementation of the same features.

For each size, synthetic events (freshrec.tools.data.synth, 10 days) are generated once into a cached bench lake.
The Spark job runs as a separate process (exactly as the DAG submits it); its own stage timings exclude
the JVM start. DuckDB (freshrec.tools.data.features_oracle) computes the same user/item tables and online lists
from the clean events Spark produced. Peak memory is the peak RSS of each process tree.

Ratios against all of DuckDB's work: the Spark ``features`` stage alone (user and item tables); like for like,
Spark ``features`` + ``online_snapshot`` (tables, lists, popularity, the snapshot files); and the whole Spark job
(also clean, dedup, quarantine, manifests and state, which DuckDB does not do). Throughput counts the whole job.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from rich.console import Console

from freshrec.core.errors import StageFailed
from freshrec.core.layout import Layout
from freshrec.core.settings import Settings
from freshrec.pipeline.features.runs import spark_environment

DEFAULT_SIZES = [1_000_000, 3_000_000, 10_000_000]
DAYS = 10
START = dt.date(2026, 1, 1)
TARGET_EVENTS_PER_S_PER_CORE = 250_000
console = Console()


class PeakRss:
    """Samples the RSS of a process and its children until stopped; keeps the peak (bytes)."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRss(proc.pid) as rss:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise StageFailed(f"{' '.join(cmd[:4])} failed: {err[-2000:]}")
    return time.perf_counter() - started, rss.peak, out


def ensure_dataset(settings: Settings, size: int) -> Path:
    """A bench home holding `size` synthetic events over DAYS days (generated once, then reused)."""
    home = Layout(settings.home).home / "bench" / "features" / f"events-{size}"
    done = home / ".generated"
    if done.exists():
        return home
    from freshrec.tools.data.synth import SynthConfig, synthesize

    config = SynthConfig(out=Layout(home).raw_events, start=START, days=DAYS, users=max(2_000, size // 500),
                         items=max(1_000, size // 2_000), events_per_day=size // DAYS, seed=11)
    total = 0
    for report in synthesize(config, workers=max(1, (os.cpu_count() or 2))):
        total += report.rows
    done.write_text(json.dumps({"events": total}))
    return home


def _spark(settings: Settings, home: Path, first: dt.date = START, last: dt.date | None = None, *options: str) -> dict:
    """One features job, staged only (the DAG's spark-submit step); ``staging`` is left for the caller."""
    staging = Layout(home).lake / "_staging" / "bench"
    last = last or START + dt.timedelta(days=DAYS - 1)
    env = {**os.environ, **spark_environment(settings), "FRESHREC_HOME": str(home)}
    cmd = [sys.executable, "-m", "freshrec.spark.features", "--home", str(home), "--from", first.isoformat(),
           "--to", last.isoformat(), "--staging", str(staging), *options]
    wall, peak, out = _run_measured(cmd, env)
    run = json.loads((staging / "run.json").read_text())
    manifests = [json.loads(p.read_text()) for p in sorted((staging / "features").glob("ds=*/_manifest.json"))]
    return {"wall_s": round(wall, 2), "stages_s": run["timings_s"], "job_s": round(sum(run["timings_s"].values()), 2),
            "stages_cpu_s": run.get("cpu_s", {}), "job_cpu_s": round(sum(run.get("cpu_s", {}).values()), 2),
            "peak_rss_mb": round(peak / 2**20), "input_rows": sum(m["input_rows"] for m in manifests),
            "incremental": run["mode"]["incremental"], "staging": str(staging)}


def _clear_published(layout: Layout) -> None:
    for folder in (layout.clean_events, layout.quarantine, layout.features, layout.online, layout.lake / "_staging"):
        shutil.rmtree(folder, ignore_errors=True)


def _publish(settings: Settings, home: Path, staging: str) -> None:
    env = {**os.environ, **spark_environment(settings), "FRESHREC_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "freshrec.spark.publish", "--home", str(home), "--staging", staging], env=env,
                   check=True, capture_output=True)


def _daily(settings: Settings, home: Path) -> dict:
    """A bootstrap of the first DAYS - 1 days (published), then the last day as the daily run does it (carrying
    the bootstrap's state) and, on the same lake, as a full run (reading all history): cost of the added day."""
    layout = Layout(home)
    _clear_published(layout)
    last = START + dt.timedelta(days=DAYS - 1)
    result = {}
    try:
        boot = _spark(settings, home, START, last - dt.timedelta(days=1))
        _publish(settings, home, boot.pop("staging"))
        full = _spark(settings, home, last, last, "--full")
        shutil.rmtree(full.pop("staging"), ignore_errors=True)
        daily = _spark(settings, home, last, last)
        shutil.rmtree(daily.pop("staging"), ignore_errors=True)
        result = {"bootstrap": boot, "day_full": full, "day_incremental": daily}
    finally:
        _clear_published(layout)
    keys = ("wall_s", "job_s", "job_cpu_s")
    result["incremental_vs_bootstrap"] = {k: round(daily[k] / max(boot[k], 1e-9), 3) for k in keys}
    result["incremental_vs_full_day"] = {k: round(daily[k] / max(full[k], 1e-9), 3) for k in keys}
    return result


def _duckdb(settings: Settings, home: Path, staging: Path) -> dict:
    last = START + dt.timedelta(days=DAYS - 1)
    script = (
        "import datetime as dt, json, time, duckdb\n"
        "from freshrec.tools.data.features_oracle import compute_features\n"
        "events = duckdb.sql(\"SELECT * EXCLUDE (landed) FROM "
        f"read_parquet('{staging}/clean/*/*/*.parquet', hive_partitioning=true)\").fetch_arrow_table()\n"
        "t, c = time.perf_counter(), time.process_time()\n"
        f"o = compute_features(events, dt.date.fromisoformat('{START}'), dt.date.fromisoformat('{last}'), "
        f"{settings.data.online_history_length})\n"
        "print(json.dumps({'features_s': time.perf_counter() - t, 'cpu_s': time.process_time() - c, "
        "'users': len(o.users), 'items': len(o.items)}))\n"
    )
    wall, peak, out = _run_measured([sys.executable, "-c", script], dict(os.environ))
    result = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "features_s": round(result["features_s"], 2), "cpu_s": round(result["cpu_s"], 2),
            "peak_rss_mb": round(peak / 2**20),
            "rows": {"users": result["users"], "items": result["items"]}}


def run(settings: Settings, sizes: list[int] | None = None, daily: bool = True) -> Path:
    """``daily``: also measure, at the largest size, one incremental daily run after a bootstrap."""
    sizes = sizes or DEFAULT_SIZES
    cores = os.cpu_count() or 1
    results = []
    for size in sizes:
        console.print(f"[bold]features bench[/] {size:,} events: generating (cached)")
        home = ensure_dataset(settings, size)
        console.print("  spark job ...")
        spark = _spark(settings, home)
        console.print(f"  spark: {spark['job_s']}s in the job, {spark['wall_s']}s with JVM start; duckdb ...")
        duck = _duckdb(settings, home, Path(spark["staging"]))
        shutil.rmtree(spark.pop("staging"), ignore_errors=True)  # the clean events: hundreds of MB at 10M events
        events = spark["input_rows"]
        like_for_like = spark["stages_s"]["features"] + spark["stages_s"]["online_snapshot"]
        entry = {
            "events": events,
            "spark": spark,
            "duckdb": duck,
            "spark_events_per_s_per_core": round(events / spark["job_s"] / cores),
            "spark_features_stage_vs_duckdb": round(spark["stages_s"]["features"] / max(duck["features_s"], 1e-9), 2),
            "spark_like_for_like_vs_duckdb": round(like_for_like / max(duck["features_s"], 1e-9), 2),
            "spark_job_vs_duckdb": round(spark["job_s"] / max(duck["features_s"], 1e-9), 2),
            # CPU time is what the work costs whatever else the machine runs (wall time counts the neighbours too).
            "spark_events_per_cpu_s": round(events / max(spark["job_cpu_s"], 1e-9)),
            "spark_like_for_like_cpu_vs_duckdb": round(
                (spark["stages_cpu_s"].get("features", 0) + spark["stages_cpu_s"].get("online_snapshot", 0)) / max(duck["cpu_s"], 1e-9), 2),
        }
        if daily and size == max(sizes):
            console.print("  daily run after a bootstrap (bootstrap, the day as a full run, the day incremental) ...")
            entry["daily"] = _daily(settings, home)
            d = entry["daily"]
            console.print(f"  bootstrap {d['bootstrap']['job_s']}s ({d['bootstrap']['job_cpu_s']} CPU s); day incremental "
                          f"{d['day_incremental']['job_s']}s ({d['day_incremental']['job_cpu_s']} CPU s), as a full run "
                          f"{d['day_full']['job_s']}s ({d['day_full']['job_cpu_s']} CPU s)")
        results.append(entry)
        console.print(f"  {entry['spark_events_per_s_per_core']:,} events/s/core; stages {spark['stages_s']}; features stage "
                      f"{entry['spark_features_stage_vs_duckdb']}x DuckDB ({entry['spark_like_for_like_vs_duckdb']}x like for like); "
                      f"peak RSS spark {spark['peak_rss_mb']} MB, duckdb {duck['peak_rss_mb']} MB")
    report = {"benchmark": "features", "cores": cores, "spark_master": settings.spark_master,
              "spark_driver_memory": settings.spark_driver_memory, "days": DAYS, "load_average": os.getloadavg(),
              "target_events_per_s_per_core": TARGET_EVENTS_PER_S_PER_CORE, "results": results,
              "linearity": _linearity(results)}
    out_dir = Layout(settings.home).reports / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "features.json"
    path.write_text(json.dumps(report, indent=2))
    _plot(report, out_dir / "features.png")
    return path


def _linearity(results: list[dict]) -> dict | None:
    """Cost per million events at each size relative to the smallest: ~1.0 everywhere means linear."""
    if len(results) < 2:
        return None
    base = results[0]["spark"]["job_s"] / results[0]["events"]
    return {str(r["events"]): round((r["spark"]["job_s"] / r["events"]) / base, 2) for r in results}


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    labels = [f"{r['events'] / 1e6:.1f}M" for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bottom = [0.0] * len(results)
    for stage in results[0]["spark"]["stages_s"]:
        values = [r["spark"]["stages_s"].get(stage, 0.0) for r in results]
        left.bar(labels, values, bottom=bottom, label=f"spark {stage}")
        bottom = [b + v for b, v in zip(bottom, values)]
    left.plot(labels, [r["duckdb"]["features_s"] for r in results], "ko-", label="duckdb features")
    left.set_ylabel("seconds")
    left.set_title("time per stage (JVM start excluded)")
    left.legend(fontsize=7)
    right.plot(labels, [r["spark_events_per_s_per_core"] for r in results], "o-", label="spark events/s/core")
    right.axhline(report["target_events_per_s_per_core"], color="r", ls="--", label="target")
    right.set_title(f"throughput ({report['cores']} cores, load {report['load_average'][0]:.1f})")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
