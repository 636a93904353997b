"""Simulation report: JSON plus a PNG of CTR and latency per variant."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any


def write_report(summary: dict[str, Any], folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(summary, indent=2, default=str))
    variants = summary["variants"]
    names = list(variants)
    fig, (ax_ctr, ax_lat) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_ctr.bar(names, [variants[n]["ctr"] or 0.0 for n in names], color="tab:blue")
    ax_ctr.set_title("CTR per variant (ground-truth clicks)")
    ax_lat.bar(names, [variants[n]["p99_ms"] or 0.0 for n in names], color="tab:orange", label="p99")
    ax_lat.bar(names, [variants[n]["p50_ms"] or 0.0 for n in names], color="tab:green", label="p50")
    ax_lat.set_title("latency (ms)")
    ax_lat.legend()
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=100)
    plt.close(fig)
    return json_path
