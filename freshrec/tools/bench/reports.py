"""Where a benchmark keeps its scratch files and writes its report (JSON + PNG under reports/bench/)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
