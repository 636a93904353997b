"""Quality of the *served* model, measured the way an outside evaluator would: through the HTTP API.

For every user in a held-out ratings file, ``POST /v1/recommend {"k": 10, "exclude_seen": true}`` and
full-ranking metrics against that user's held-out items (every held-out interaction is relevant). With the
ML-100K ``msr`` split this is the protocol of the Microsoft Recommenders table in ANCHORS.md.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

from freshrec.core.layout import Layout
from freshrec.core.settings import Settings
from freshrec.pipeline.data.movielens import read_ratings
from freshrec.pipeline.offline.metrics import ranking_metrics

# Published ML-100K rows (MS Recommenders README) for the plot; see ANCHORS.md.
ANCHOR_NDCG = {"BiVAE": 0.4751, "BPR": 0.4420, "LightGCN": 0.4198, "NCF": 0.3961, "SAR": 0.3825, "EASE (ours, ANCHORS)": 0.480}


async def _recommend_all(url: str, users: list[str], k: int, concurrency: int = 8) -> dict[str, dict]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    answers: dict[str, dict] = {}
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        with Progress() as progress:
            bar = progress.add_task("recommend", total=len(users))

            async def one(user: str) -> None:
                async with semaphore:
                    response = await client.post("/v1/recommend", json={"user_id": user, "k": k, "exclude_seen": True})
                    response.raise_for_status()
                    answers[user] = response.json()
                    progress.advance(bar)

            await asyncio.gather(*(one(u) for u in users))
    return answers


def served_metrics(answers: dict[str, dict], held_out: dict[str, list[str]], k: int, n_items: int | None) -> dict:
    """Metrics of the served top-k lists (ids compared as strings)."""
    users = sorted(held_out)
    index: dict[str, int] = {}
    ranked = [[index.setdefault(item["item_id"], len(index)) for item in answers[u]["items"]] for u in users]
    relevant = [[index.setdefault(i, len(index)) for i in held_out[u]] for u in users]
    metrics: dict[str, Any] = ranking_metrics(ranked, relevant, k=k, n_items=n_items)
    metrics["model_versions"] = sorted({answers[u]["model_version"] for u in users})
    metrics["variants"] = sorted({answers[u]["variant"] for u in users})
    return metrics


def run(settings: Settings, test: Path, url: str | None = None, k: int = 10) -> Path:
    """Evaluate the live server against a held-out ratings file; JSON + PNG under reports/bench/."""
    _, frame = read_ratings(Path(test))
    held_out = {str(u): [str(i) for i in g] for u, g in frame.groupby("user_id")["item_id"]}
    url = url or settings.serving_url
    answers = asyncio.run(_recommend_all(url, sorted(held_out), k))
    catalogue = httpx.get(f"{url}/v1/models", timeout=10).json()
    n_items = _catalogue_size(catalogue)
    metrics = served_metrics(answers, held_out, k, n_items)
    out = Layout(settings.home).reports / "bench"
    out.mkdir(parents=True, exist_ok=True)
    report = out / "quality.json"
    report.write_text(json.dumps({"test_file": str(test), "url": url, "k": k, "metrics": metrics}, indent=2))
    _plot(metrics, report.with_suffix(".png"))
    return report


def _catalogue_size(models: dict) -> int | None:
    sizes = [entry["n_items"] for entry in models.get("versions", []) if entry.get("role") == "champion"]
    return int(sizes[0]) if sizes else None


def _plot(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["FreshRec (served)", *ANCHOR_NDCG]
    values = [metrics["ndcg@10"], *ANCHOR_NDCG.values()]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(names[::-1], values[::-1], color=["#888"] * len(ANCHOR_NDCG) + ["#2a7"])
    ax.set_xlabel("nDCG@10 (full ranking, seen items removed)")
    ax.set_title(f"Served model quality over HTTP ({metrics['users']} users)")
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:.3f}", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
