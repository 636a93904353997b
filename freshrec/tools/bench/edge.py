"""``freshrec bench edge``: the champion's edge bundle in headless chromium (onnxruntime-web, WASM) vs the server.

Everything runs in a scratch home (removed afterwards) holding a copy of the champion's bundle and the live
online snapshot, its own registry and a real serving tier (uvicorn, in this process), so the benchmark's
events never reach the real lake. Figures:

- parity: real snapshot histories, each posted to ``/v1/events`` under a fresh user id (one second apart) and
  given to the page; ``/v1/recommend`` and the page's list are compared: identical top-10 ids, rank 1, and the
  largest score difference (the documented tolerance is the manifest's ``ranking.score_tolerance``);
- in-browser scoring time per recommendation (history -> top-10, ``performance.now()`` in the page), p50/p90;
- bundle size (every file) against the fp32 student graph: stored (the target), and transferred (the bytes a
  client that accepts gzip downloads from ``/v1/edge/<version>/<file>``, measured on the wire) against the
  fp32 graph stored and gzip-compressed alike;
- offline then online: events recorded while the browser is offline (DevTools network emulation), sent when it
  is back, the same batch sent a second time (a retry after a lost response), the server stopped (its log
  segments sealed) and the log landed into the raw lake: each event_id must be there exactly once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import httpx  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from rich.console import Console  # noqa: E402

from freshrec.core.errors import FreshRecError  # noqa: E402
from freshrec.core.layout import Layout  # noqa: E402
from freshrec.core.settings import Settings, get_settings  # noqa: E402
from freshrec.pipeline.export.edge import SCORE_TOLERANCE, bundle_bytes, export_edge, pick_version, read_bundle_file  # noqa: E402
from freshrec.pipeline.features.runs import land_stream  # noqa: E402
from freshrec.serving.snapshot import current_snapshot_name, read_snapshot  # noqa: E402
from freshrec.tools.bench.edge_browser import Chromium  # noqa: E402
from freshrec.tools.bench.homes import copy_version  # noqa: E402
from freshrec.tools.bench.processes import free_port  # noqa: E402
from freshrec.tools.bench.reports import save, scratch  # noqa: E402

console = Console()
TARGETS = {"top10_identical": 0.99, "p50_ms": 5.0, "bundle_over_fp32": 0.25}


class BenchFailed(FreshRecError):
    """The benchmark could not run to the end."""


@contextlib.contextmanager
def _serving(settings: Settings) -> Iterator[str]:
    import uvicorn

    from freshrec.serving.api import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not (server.started and httpx.get(f"{url}/readyz", timeout=10).status_code == 200):
        if time.monotonic() > deadline or not thread.is_alive():
            raise BenchFailed("the serving tier did not become ready")
        time.sleep(0.2)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _histories(settings: Settings, n: int, seed: int) -> list[list[str]]:
    """``n`` real histories (item ids, oldest first) sampled from the snapshot's users with one."""
    online = Layout(settings.home).online
    snapshot = read_snapshot(online, current_snapshot_name(online) or "")
    lists = [h for h in snapshot.histories.to_pylist() if h]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(lists), size=min(n, len(lists)), replace=False)
    return [lists[i][-settings.data.online_history_length:] for i in picked]


def _parity(tab: Chromium, url: str, histories: list[list[str]], known: set[str]) -> dict[str, Any]:
    now = int(time.time())
    users = {f"edge-bench-{uuid.uuid4().hex[:8]}-{n}": [{"item_id": i, "ts": float(now - 1000 + t)}
                                                        for t, i in enumerate(h) if i in known]
             for n, h in enumerate(histories)}
    events = [{"event_id": uuid.uuid4().hex, "user_id": u, "item_id": e["item_id"], "event_type": "click", "value": 1.0,
               "ts": e["ts"]} for u, entries in users.items() for e in entries]
    for start in range(0, len(events), 1000):
        httpx.post(f"{url}/v1/events", json={"events": events[start:start + 1000]}, timeout=60).raise_for_status()
    for entries in list(users.values())[:20]:  # warm-up: the WASM kernels' first calls allocate
        tab.evaluate(f"window.edgeDemo.rank({json.dumps(entries)}, 10)")
    same_top10 = same_top1 = 0
    worst_score_gap = 0.0
    timings: list[float] = []
    mismatches: list[dict[str, Any]] = []
    for user, entries in users.items():
        server = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": 10, "exclude_seen": True}, timeout=30).json()
        edge = tab.evaluate(f"window.edgeDemo.rank({json.dumps(entries)}, 10)")
        timings.append(edge["ms"])
        s_ids, e_ids = [i["item_id"] for i in server["items"]], [i["item_id"] for i in edge["items"]]
        same_top10 += s_ids == e_ids
        same_top1 += s_ids[:1] == e_ids[:1]
        shared = {i["item_id"]: i["score"] for i in server["items"]}
        gaps = [abs(i["score"] - shared[i["item_id"]]) for i in edge["items"] if i["item_id"] in shared]
        worst_score_gap = max([worst_score_gap, *gaps])
        if s_ids != e_ids and len(mismatches) < 5:
            mismatches.append({"user": user, "server": server["items"], "edge": edge["items"]})
    n = len(users)
    ms = np.array(timings)
    return {"histories": n, "top10_identical": same_top10 / n, "rank1_identical": same_top1 / n,
            "max_abs_score_difference": worst_score_gap, "score_tolerance": SCORE_TOLERANCE,
            "scoring_ms": {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                           "mean": float(ms.mean()), "all": [round(float(t), 3) for t in ms]},
            "mismatches": mismatches}


def _offline(tab: Chromium, url: str, items: list[str], n: int) -> tuple[dict[str, Any], list[str]]:
    user = f"edge-offline-{uuid.uuid4().hex[:8]}"
    tab.evaluate(f"window.edgeDemo.open({json.dumps(user)})")
    tab.offline(True)
    picks = json.dumps([items[i % len(items)] for i in range(n)])
    tab.evaluate(f"(() => {{ const c = window.edgeDemo.client; for (const i of {picks}) c.record(i); }})()")
    queued = tab.evaluate("window.edgeDemo.client.queue.length")
    offline_list = tab.evaluate("window.edgeDemo.client.recommend(10)")
    tab.evaluate("window.__replay = window.edgeDemo.client.queue")
    time.sleep(1.0)
    still_queued = tab.evaluate("window.edgeDemo.client.queue.length")
    tab.offline(False)
    deadline = time.monotonic() + 60
    while tab.evaluate("window.edgeDemo.client.queue.length") and time.monotonic() < deadline:
        time.sleep(0.2)
    replay = tab.evaluate("window.edgeDemo.client.send(window.__replay)")  # a retry after a lost response
    stats = tab.evaluate("window.edgeDemo.client.stats")
    ids = tab.evaluate("window.__replay.map((e) => e.event_id)")
    return {"events": n, "queued_offline": queued, "queued_after_1s_offline": still_queued,
            "recommended_offline": offline_list["reason"], "drained": tab.evaluate("window.edgeDemo.client.queue.length") == 0,
            "replayed_batch_acknowledged": replay, "client_stats": stats}, ids


def _landed(settings: Settings, ids: list[str]) -> dict[str, Any]:
    summary = land_stream(settings)
    counts: Counter = Counter()
    for path in sorted(Layout(settings.home).raw_events.glob("ds=*/**/*.parquet")):
        counts.update(pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist())
    per_event = [counts.get(i, 0) for i in ids]
    return {"in_raw_lake_once": sum(c == 1 for c in per_event), "missing": sum(c == 0 for c in per_event),
            "duplicated": sum(c > 1 for c in per_event), "exactly_once": all(c == 1 for c in per_event),
            "landing": {k: v for k, v in summary.items() if k != "batches"}}


def _transferred(url: str, manifest: dict) -> int:
    """Bytes on the wire for the bundle's files, fetched as a browser does (Accept-Encoding: gzip)."""
    total = 0
    with httpx.Client(base_url=url, timeout=30, headers={"Accept-Encoding": "gzip"}) as client:
        for name, entry in manifest["files"].items():
            response = client.get(f"/v1/edge/{manifest['model_version']}/{name}")
            response.raise_for_status()
            if hashlib.sha256(response.content).hexdigest() != entry["sha256"]:
                raise BenchFailed(f"{name} decoded from the wire does not match its sha256")
            total += response.num_bytes_downloaded
    return total


def _fp32_gzip_bytes(settings: Settings, manifest: dict) -> int | None:
    fp32 = pick_version(settings, manifest["model_version"]).artifacts.get("fp32")
    return len(gzip.compress(Path(fp32.uri).read_bytes(), 9)) if fp32 is not None else None


def run(settings: Settings, histories: int = 500, offline_events: int = 100, seed: int = 0) -> Path:
    previous_home = os.environ.get("FRESHREC_HOME")
    with scratch(settings, "bench-edge-") as home:
        work = copy_version(settings, home, None, "bench-edge")
        os.environ["FRESHREC_HOME"] = str(home)  # code that reads get_settings() sees the scratch home too
        get_settings.cache_clear()
        try:
            manifest = export_edge(work)
            folder = home / "edge" / manifest["model_version"]
            known = set(json.loads(read_bundle_file(folder, "items.json"))["items"])
            on_disk = bundle_bytes(folder)
            with _serving(work) as url, Chromium() as tab:
                gzipped = _transferred(url, manifest)
                tab.navigate(f"{url}/edge/?user=edge-bench")
                ready = tab.evaluate("window.edgeReady")
                if ready is not True:
                    raise BenchFailed(f"the demo page did not load the bundle: {ready}")
                console.print(f"parity on {histories} histories ...")
                parity = _parity(tab, url, _histories(work, histories, seed), known)
                console.print(f"offline then online: {offline_events} events ...")
                offline, ids = _offline(tab, url, sorted(known), offline_events)
            console.print("landing the ingestion log into the raw lake (Spark) ...")
            offline["raw_lake"] = _landed(work, ids)
        finally:
            if previous_home is None:
                os.environ.pop("FRESHREC_HOME", None)
            else:
                os.environ["FRESHREC_HOME"] = previous_home
            get_settings.cache_clear()
    fp32 = manifest["fp32_graph_bytes"]
    fp32_gzip = _fp32_gzip_bytes(settings, manifest)
    report = {
        "benchmark": "edge",
        "model_version": pick_version(settings, None).version,
        "browser": "headless chromium, onnxruntime-web (WASM, 1 thread)",
        # stored_bytes: the bundle folder on disk, manifest included (its files are kept gzipped, as a device
        # keeps them); content_bytes: the files decoded. The like-for-like figure compares the stored bundle
        # with the fp32 graph gzipped the same way.
        "bundle": {"variant": manifest["artifact_variant"], "files": manifest["files"], "storage": manifest.get("storage"),
                   "stored_bytes": on_disk, "content_bytes": manifest["bytes"],
                   "fp32_graph_bytes": fp32, "ratio_to_fp32": on_disk / fp32 if fp32 else None,
                   "content_ratio_to_fp32": manifest["bytes"] / fp32 if fp32 else None,
                   "wire_bytes": gzipped, "wire_ratio_to_fp32": gzipped / fp32 if fp32 else None,
                   "fp32_graph_gzip_bytes": fp32_gzip,
                   "ratio_to_fp32_gzip": on_disk / fp32_gzip if fp32_gzip else None,
                   "n_items": manifest["n_items"], "graph": manifest["graph"]},
        "parity": parity,
        "offline_then_online": offline,
        "targets": TARGETS,
    }
    report["meets"] = {
        "top10_identical": parity["top10_identical"] >= TARGETS["top10_identical"],
        "rank1_all": parity["rank1_identical"] == 1.0,
        "p50_ms": parity["scoring_ms"]["p50"] <= TARGETS["p50_ms"],
        "bundle_over_fp32": bool(fp32) and on_disk / fp32 <= TARGETS["bundle_over_fp32"],
        "offline_exactly_once": offline["raw_lake"]["exactly_once"],
    }
    console.print({"top10_identical": parity["top10_identical"], "rank1": parity["rank1_identical"],
                   "p50_ms": parity["scoring_ms"]["p50"], "ratio_to_fp32": report["bundle"]["ratio_to_fp32"],
                   "ratio_to_fp32_gzip": report["bundle"]["ratio_to_fp32_gzip"],
                   "exactly_once": offline["raw_lake"]["exactly_once"]})
    return save(settings, "edge", report, _plot)


def _plot(report: dict, path: Path) -> Path:
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.5))
    parity = report["parity"]
    a.bar(["top-10 identical", "rank 1 identical"], [parity["top10_identical"], parity["rank1_identical"]], color="#4c72b0")
    a.axhline(report["targets"]["top10_identical"], color="red", linestyle="--", label="target")
    a.set_ylim(0, 1.05)
    a.set_title(f"browser vs /v1/recommend, {parity['histories']} histories")
    a.legend()
    b.hist(parity["scoring_ms"]["all"], bins=40, color="#55a868")
    b.axvline(parity["scoring_ms"]["p50"], color="black", label=f"p50 {parity['scoring_ms']['p50']:.2f} ms")
    b.axvline(report["targets"]["p50_ms"], color="red", linestyle="--", label="target")
    b.set_xlabel("ms per recommendation (WASM)")
    b.set_title(f"in-browser scoring, {report['bundle']['n_items']} items")
    b.legend()
    bundle = report["bundle"]
    c.bar(["fp32 graph", "fp32 graph, gzip", f"bundle decoded ({bundle['variant']})", "bundle stored / sent"],
          [bundle["fp32_graph_bytes"] or 0, bundle["fp32_graph_gzip_bytes"] or 0, bundle["content_bytes"], bundle["stored_bytes"]],
          color=["#8172b2", "#b3a9d4", "#dd8452", "#c44e52"])
    c.axhline((bundle["fp32_graph_bytes"] or 0) * report["targets"]["bundle_over_fp32"], color="red", linestyle="--")
    c.set_ylabel("bytes")
    offline = report["offline_then_online"]["raw_lake"]
    c.set_title(f"size x{bundle['ratio_to_fp32'] or 0:.2f} of fp32; offline events once: {offline['in_raw_lake_once']}"
                f"/{report['offline_then_online']['events']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
