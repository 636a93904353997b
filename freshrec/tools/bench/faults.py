"""``freshrec bench faults``: scripted, bounded, loopback-only fault scenarios against real servers.

Each scenario builds a world of its own (freshrec.tools.bench.faults_world: a scratch home, real ONNX
bundles, a registry in a private schema of the local Postgres), runs ``freshrec serve`` there, injects one
fault and counts what clients saw: requests sent / ok / failed by status, the version that served before
and after, the time to recover. Its verdict is computed from those counts (every named check must hold):

- worker_kill: kill -9 of one of two workers under load (freshrec.tools.bench.faults_process)
- kill_during_swap: kill -9 of serving while it swaps champions; back on the last good one
- registry_down: the registry database unreachable (freshrec.tools.bench.faults_registry)
- corrupt_artifact: truncated, corrupted and checksum-mismatched ONNX files
- disk_full: the ingestion log's filesystem full under POST /v1/events
- overload: five times one worker's capacity (freshrec.tools.bench.faults_overload)
- concurrent_promotions: several promotions at once, exactly one winner

JSON + PNG (a verdict table) under FRESHREC_HOME/reports/bench/faults.*; ``quick`` shortens every phase.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from freshrec.core.errors import InvalidInput
from freshrec.core.settings import Settings
from freshrec.tools.bench.faults_overload import overload
from freshrec.tools.bench.faults_process import disk_full, kill_during_swap, worker_kill
from freshrec.tools.bench.faults_registry import concurrent_promotions, corrupt_artifacts, registry_down
from freshrec.tools.bench.faults_world import PG_URL, FaultWorld, fault_world
from freshrec.tools.bench.reports import save

Scenario = Callable[[FaultWorld, bool], dict]
# Graph width per scenario: small (a file below the disk-full scenario's size limit, quick to load) except
# under overload, where a request must cost more than a 503 does, or shedding cannot win anything back.
DIMS = {"overload": 512}
SCENARIOS: dict[str, Scenario] = {
    "worker_kill": lambda w, quick: worker_kill(w, live_s=1.0 if quick else 3.0),
    "kill_during_swap": lambda w, quick: kill_during_swap(w, live_s=1.0 if quick else 3.0),
    "registry_down": lambda w, quick: registry_down(w, outage_s=2.0 if quick else 6.0),
    "corrupt_artifact": lambda w, quick: corrupt_artifacts(w),
    "disk_full": lambda w, quick: disk_full(w),
    "overload": lambda w, quick: overload(w, duration_s=3.0 if quick else 8.0),
    "concurrent_promotions": lambda w, quick: concurrent_promotions(w, racers=3 if quick else 6),
}


def run_scenario(settings: Settings, name: str, *, quick: bool = False, pg_url: str = PG_URL) -> dict:
    """One scenario in a world of its own. A scenario that cannot finish (its harness raised) fails,
    with the error as its evidence: the suite goes on with the next one."""
    started = time.monotonic()
    try:
        with fault_world(settings, pg_url=pg_url, dim=DIMS.get(name, 16)) as world:
            result = SCENARIOS[name](world, quick)
    except Exception as exc:  # noqa: BLE001 - any harness failure is this scenario's failure, not the suite's
        result = {"error": f"{type(exc).__name__}: {exc}"[:2000], "checks": {"finished": False}, "verdict": "fail"}
    return {**result, "seconds": round(time.monotonic() - started, 1)}


def _chosen(scenarios: list[str] | str | None) -> list[str]:
    names = scenarios.split(",") if isinstance(scenarios, str) else list(scenarios or SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise InvalidInput(f"unknown fault scenario(s) {unknown}; choose from {sorted(SCENARIOS)}")
    return names


def run(settings: Settings, *, scenarios: list[str] | str | None = None, quick: bool = False,
        pg_url: str | None = None) -> Path:
    """Every chosen scenario, one after another; the report's ``passed`` is true when all of them pass."""
    configured = settings.registry_url or ""
    url = pg_url or (configured if configured.startswith("postgresql") else PG_URL)
    results = {name: run_scenario(settings, name, quick=quick, pg_url=url) for name in _chosen(scenarios)}
    report = {"quick": quick, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
              "passed": all(r["verdict"] == "pass" for r in results.values()),
              "verdicts": {name: r["verdict"] for name, r in results.items()}, "scenarios": results}
    return save(settings, "faults", report, _plot)


def _failed_checks(result: dict) -> str:
    failed = [name for name, ok in result["checks"].items() if not ok]
    return ", ".join(failed) or "-"


def _plot(report: dict, path: Path) -> Path:
    """A table: scenario, verdict, the checks that failed, seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [[name, r["verdict"], _failed_checks(r), f"{r['seconds']:.0f}"] for name, r in report["scenarios"].items()]
    fig, ax = plt.subplots(figsize=(11, 0.5 + 0.4 * len(rows)))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=["scenario", "verdict", "failed checks", "s"], loc="center", cellLoc="left",
                     colWidths=[0.22, 0.08, 0.62, 0.08])
    for n, row in enumerate(rows, start=1):
        table[n, 1].set_facecolor("#bfe5bf" if row[1] == "pass" else "#f2b8b5")
    ax.set_title("freshrec bench faults", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
