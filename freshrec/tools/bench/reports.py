"""Where a benchmark keeps its scratch files and writes its report (JSON + PNG under reports/bench/), and the
header every serving benchmark's report starts with."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from freshrec.core.layout import Layout
from freshrec.core.settings import Settings


@contextmanager
def scratch(settings: Settings, prefix: str) -> Iterator[Path]:
    """A private folder under FRESHREC_HOME for a benchmark's runs, removed afterwards whatever happens."""
    root = Layout(settings.home).home
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save(settings: Settings, name: str, report: dict, plot: Callable[[dict, Path], Path]) -> Path:
    """``reports/bench/<name>.json`` and the plot beside it as ``<name>.png``; returns the JSON path."""
    folder = Layout(settings.home).reports / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    plot(report, folder / f"{name}.png")
    return path


def served_header(benchmark: str, served: tuple[Path, Path, str], users: int, request: dict[str, Any], slo_ms: float,
                  duration_s: float, load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What was served (``served``: bundle, snapshot, model version), how it was asked and on what box: called
    once the runs are over, so ``load_average_after`` is the load they left."""
    bundle, snapshot, version = served
    return {
        "benchmark": benchmark,
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "model_version": version,
        "bundle": str(bundle),
        "snapshot": snapshot.name,
        "users": users,
        "request": request,
        "slo_p99_ms": slo_ms,
        "duration_s_per_point": duration_s,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def save_served_figure(fig: Any, path: Path, title: str, report: dict[str, Any]) -> Path:
    """A serving benchmark's figure titled with what its header says of the run (model, CPUs, load before)."""
    import matplotlib.pyplot as plt

    fig.suptitle(f"{title}, model v{report['model_version']}, {report['cpu_count']} CPUs, "
                 f"load avg before {report['load_average_before'][0]:.1f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
