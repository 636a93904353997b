"""``freshrec bench scale``: what a catalogue's size costs. This part: ANN retrieval against exact full scoring.

For each catalogue size a synthetic student (clustered item vectors, so that tastes exist to be found; the model
form the pipeline serves: pooled history, residual MLP, factorised scores plus bias) is exported both ways:
- exact: the student graph scoring every item (what serving does at or below ``serving.max_candidates``);
- ANN: the user tower, the usearch HNSW index over the item keys (opened as a memory-mapped view, as serving opens
  it) and the candidate graph scoring the retrieved items only.
Reported per size: recall@10 of the ANN path's final top-10 against the exact top-10 (held-out synthetic users,
nothing excluded), single-stream latency p50/p99 of both paths (fp32 graphs, one thread, best of interleaved
rounds), index build time and size, the graphs' sizes. JSON + a log-log PNG under reports/bench/.

Served (``--served``, the largest size): the ANN bundle (the same graphs and index, checksummed, registered and
promoted in a scratch home) behind ``freshrec serve`` with 2 workers and a synthetic snapshot of ``--users`` users,
measured like ``freshrec bench serving`` (result cache off: single stream, open-loop sweep, max rate with p99 within
the SLO, every answer 2xx), plus PSS/RSS per worker and for the host (the index is a shared file mapping).

Not yet measured here (issue 16): teacher training by item count, 1-vs-2-process training.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import httpx  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import track  # noqa: E402
from tqdm import tqdm  # noqa: E402

from freshrec.core.errors import StageFailed  # noqa: E402
from freshrec.core.layout import Layout  # noqa: E402
from freshrec.core.registry import sha256_file  # noqa: E402
from freshrec.core.schemas import (  # noqa: E402
    BUNDLE_CANDIDATE_GRAPH,
    BUNDLE_ITEM_INDEX,
    BUNDLE_USER_TOWER,
    BUNDLE_VOCAB,
    SHA256SUMS,
)
from freshrec.core.settings import Settings, load_settings  # noqa: E402
from freshrec.pipeline.export.latency import time_calls  # noqa: E402
from freshrec.pipeline.export.onnx_export import run_scores, session  # noqa: E402
from freshrec.pipeline.export.retrieval import (  # noqa: E402
    IndexParams,
    build_index,
    candidate_student,
    export_user_tower,
    keys_of,
)
from freshrec.pipeline.export.stage import export_fp32  # noqa: E402
from freshrec.pipeline.training.models import Student, StudentConfig  # noqa: E402
from freshrec.serving.ranking import top_k  # noqa: E402
from freshrec.serving.retrieval import Retriever  # noqa: E402
from freshrec.tools.bench.reports import save, scratch  # noqa: E402
from freshrec.tools.bench.serving import ServerSpec, measure_server, request_bodies, server_process  # noqa: E402

DEFAULT_ITEMS = [10_000, 100_000, 1_000_000]
USERS = 300  # held-out synthetic users per size (recall and latency)
HISTORY = 30
CLUSTERS = 200
ROUNDS = 3
DEFAULT_RATES = [250, 500, 1000, 1500, 2000, 2500, 3000, 4000]
console = Console()


def synthetic_student(n_items: int, dim: int, seed: int) -> tuple[Student, np.ndarray]:
    """A student whose items fall in ``CLUSTERS`` tastes (input and output vectors near their cluster's centre,
    a popularity bias), and each item's cluster."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, CLUSTERS, n_items)
    centres = rng.normal(size=(CLUSTERS, dim)).astype(np.float32)
    vectors = (centres[cluster] + 0.8 * rng.normal(size=(n_items, dim)).astype(np.float32)) / np.sqrt(dim)
    student = Student(StudentConfig(n_items=n_items, dim=dim, hidden=2 * dim)).eval()
    with torch.no_grad():
        student.item_in.weight[1:] = torch.from_numpy(vectors / HISTORY)
        student.item_out[:, 1:] = torch.from_numpy(vectors.T.copy())
        student.item_bias[1:] = torch.from_numpy((0.3 * rng.normal(size=n_items)).astype(np.float32))
    return student, cluster


def user_histories(cluster: np.ndarray, users: int, seed: int) -> np.ndarray:
    """[users, HISTORY] item indices: each user's items mostly from one taste, some from anywhere."""
    rng = np.random.default_rng(seed)
    by_cluster = [np.flatnonzero(cluster == c) + 1 for c in range(CLUSTERS)]
    rows = []
    for _ in range(users):
        members = by_cluster[int(rng.integers(0, CLUSTERS))]
        taste = rng.choice(members, size=HISTORY - 5, replace=len(members) < HISTORY - 5)
        rows.append(np.concatenate((taste, rng.integers(1, len(cluster) + 1, 5))))
    return np.asarray(rows, dtype=np.int64)


def exact_top10(student: Student, histories: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = student.catalogue_logits(torch.from_numpy(histories))[:, 1:]
        return (logits.topk(10, dim=1).indices + 1).numpy()


def measure(n_items: int, work: Path, dim: int, params: IndexParams, fetch: int, seed: int) -> dict:
    folder = work / f"items-{n_items}"
    student, cluster = synthetic_student(n_items, dim, seed)
    histories = user_histories(cluster, USERS, seed + 1)
    started = time.perf_counter()
    full, candidates_graph, tower = (folder / "student.fp32.onnx", folder / BUNDLE_CANDIDATE_GRAPH,
                                     folder / BUNDLE_USER_TOWER)
    export_fp32(student, full)
    export_fp32(candidate_student(student), candidates_graph)
    export_user_tower(student, tower)
    export_s = time.perf_counter() - started
    index = build_index(keys_of(student), folder / BUNDLE_ITEM_INDEX, params, threads=0)
    retriever = Retriever(tower, folder / BUNDLE_ITEM_INDEX, n_items, fetch, params.expansion_search)
    scorer, exact_scorer = session(candidates_graph), session(full)
    catalogue = np.arange(1, n_items + 1, dtype=np.int64).reshape(1, -1)

    def ann(history: np.ndarray) -> np.ndarray:
        candidates = retriever.candidates(history)[0]
        scores = run_scores(scorer, history, candidates.reshape(1, -1))[0]
        positions, _ = top_k(scores, 10)
        return candidates[positions]

    def exact(history: np.ndarray) -> np.ndarray:
        positions, _ = top_k(run_scores(exact_scorer, history, catalogue)[0], 10)
        return positions + 1

    truth = exact_top10(student, histories)
    found = [ann(histories[i : i + 1]) for i in track(range(USERS), description=f"{n_items:,} items: recall")]
    recall = float(np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))
    onnx_exact = float(np.mean([len(set(exact(histories[i : i + 1]).tolist()) & set(truth[i].tolist())) / 10
                                for i in range(min(USERS, 50))]))
    rounds: dict[str, list[dict]] = {"ann": [], "exact": []}
    rows = iter(range(10**9))
    for _ in range(ROUNDS):
        rounds["ann"].append(time_calls(lambda: ann(histories[next(rows) % USERS][None]), min_calls=200, min_seconds=1.0))
        rounds["exact"].append(time_calls(lambda: exact(histories[next(rows) % USERS][None]),
                                          min_calls=20 if n_items >= 500_000 else 100, min_seconds=1.0))
    latency = {name: min(r, key=lambda x: x["cpu_p50_ms"]) for name, r in rounds.items()}
    sizes = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    console.print(f"{n_items:>9,} items: recall@10 {recall:.4f}; ANN p50 {latency['ann']['p50_ms']:.3f} ms "
                  f"p99 {latency['ann']['p99_ms']:.3f} ms; exact p50 {latency['exact']['p50_ms']:.3f} ms; "
                  f"index {index['bytes'] / 1e6:.1f} MB built in {index['build_s']:.1f} s")
    np.save(folder / "clusters.npy", cluster)
    return {"items": n_items, "recall@10": recall, "exact_graph_recall@10_vs_torch": onnx_exact,
            "mean_candidates": float(np.mean([len(retriever.candidates(histories[i : i + 1])[0]) for i in range(50)])),
            "latency": latency, "index": index, "export_s": round(export_s, 2), "file_bytes": sizes}


def _bundle(folder: Path, home: Path, n_items: int, fetch: int) -> tuple[Settings, Path]:
    """``folder``'s graphs and index as a checksummed bundle, registered and promoted in a scratch home whose
    servers fetch ``fetch`` items per request (its freshrec.toml)."""
    from freshrec.core.registry import open_registry

    home.mkdir(parents=True)
    (home / "freshrec.toml").write_text(f"[serving]\nretrieval_fetch = {fetch}\n")
    settings = load_settings(home=home)
    bundle = Layout(home).models / "scale-ann"
    bundle.mkdir(parents=True)
    for name in ("student.fp32.onnx", BUNDLE_CANDIDATE_GRAPH, BUNDLE_USER_TOWER, BUNDLE_ITEM_INDEX):
        (folder / name).replace(bundle / name)
    (bundle / BUNDLE_VOCAB).write_text(json.dumps({"items": [f"i{n}" for n in range(1, n_items + 1)], "users": []}))
    sums = {p.name: sha256_file(p) for p in bundle.iterdir()}
    (bundle / SHA256SUMS).write_text("".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())))
    with open_registry(settings) as registry:
        view = registry.register_candidate(bundle, {"fp32": bundle / "student.fp32.onnx"}, {}, {}, {}, actor="bench scale")
        registry.promote(view.version, actor="bench scale", reason="scale benchmark")
    return settings, bundle


def _snapshot(home: Path, cluster: np.ndarray, users: int, seed: int) -> Path:
    online = Layout(home).online
    folder = online / "scale-snapshot"
    folder.mkdir(parents=True)
    ids = [f"i{n}" for n in range(len(cluster) + 1)]
    rows = user_histories(cluster, users, seed)
    histories = [list(dict.fromkeys(ids[i] for i in row)) for row in rows]  # distinct, as a snapshot holds
    pq.write_table(pa.table({"user_id": [f"u{n}" for n in range(users)], "history": histories, "seen": histories}),
                   folder / "users.parquet")
    popularity = np.bincount(rows.ravel(), minlength=len(cluster) + 1)[1:].astype(float)
    pq.write_table(pa.table({"item_id": ids[1:], "popularity": popularity}), folder / "items.parquet")
    (online / "CURRENT").write_text(folder.name)
    return folder


def _memory(process: subprocess.Popen) -> dict:
    """PSS / RSS / USS of the server's workers (uvicorn's children) and of the host's server processes together."""
    parent = psutil.Process(process.pid)
    processes = []
    for child in [parent, *parent.children(recursive=True)]:
        info = child.memory_full_info()
        role = ("supervisor" if child.pid == parent.pid
                else "helper" if any("resource_tracker" in part for part in child.cmdline()) else "worker")
        processes.append({"pid": child.pid, "role": role, "pss_mb": info.pss / 2**20, "rss_mb": info.rss / 2**20,
                          "uss_mb": info.uss / 2**20})
    return {"workers": [p for p in processes if p["role"] == "worker"],
            "others": [p for p in processes if p["role"] != "worker"],
            "host_pss_mb": sum(p["pss_mb"] for p in processes), "host_rss_mb": sum(p["rss_mb"] for p in processes)}


def served(work: Path, row: dict, users: int, fetch: int, rates: list[int], duration_s: float, seed: int) -> dict:
    """The largest size's ANN bundle behind ``freshrec serve`` (2 workers), under load."""
    n_items = row["items"]
    folder = work / f"items-{n_items}"
    home = work / "served-home"
    settings, bundle = _bundle(folder, home, n_items, fetch)
    snapshot = _snapshot(home, np.load(folder / "clusters.npy"), users, seed + 2)
    bodies = request_bodies(snapshot)
    spec = ServerSpec("ann, 2 workers", "fp32", workers=2)
    with server_process(spec, settings, bundle, snapshot) as (port, process), \
            tqdm(total=1, desc=f"serving {n_items:,} items, {users:,} users") as progress:
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).json()
        retrieval = [v.get("retrieval") for v in models["versions"]]
        if not retrieval or retrieval[0] is None:
            raise StageFailed(f"the server did not load the ANN version: {models}")
        result = measure_server(port, bodies, rates, duration_s, settings.serving.slo_latency_ms, 64, progress)
        memory = _memory(process)
    single = result["single_stream"]
    console.print(f"served {n_items:,} items: single stream p50 {single['p50_ms']:.2f} ms p99 {single['p99_ms']:.2f} ms; "
                  f"max rate within the SLO {result['max_rate_within_slo']}/s; host PSS {memory['host_pss_mb']:.0f} MB")
    return {"items": n_items, "users": users, "workers": spec.workers, "retrieval": retrieval[0], **result,
            "memory": memory, "slo_p99_ms": settings.serving.slo_latency_ms}


def plot(report: dict, path: Path) -> Path:
    rows = report["sizes"]
    items = [r["items"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, style in (("ann", "o-"), ("exact", "s--")):
        axes[0].plot(items, [r["latency"][name]["p50_ms"] for r in rows], style, label=f"{name} p50")
        axes[0].plot(items, [r["latency"][name]["p99_ms"] for r in rows], style, alpha=0.5, label=f"{name} p99")
    axes[0].axhline(5.0, color="grey", lw=0.8, ls=":", label="target p99 5 ms")
    axes[0].set(xscale="log", yscale="log", xlabel="items", ylabel="ms per request (single stream)", title="latency")
    axes[1].plot(items, [r["recall@10"] for r in rows], "o-")
    axes[1].axhline(0.95, color="grey", lw=0.8, ls=":")
    axes[1].set(xscale="log", xlabel="items", ylabel="recall@10 vs exact", title="ANN recall", ylim=(0.8, 1.005))
    axes[2].plot(items, [r["index"]["build_s"] for r in rows], "o-", label="build s")
    axes[2].plot(items, [r["index"]["bytes"] / 1e6 for r in rows], "s--", label="index MB")
    axes[2].set(xscale="log", yscale="log", xlabel="items", title="index cost")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8) if ax is not axes[1] else None
    fig.suptitle("freshrec bench scale: ANN retrieval vs exact full scoring")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(settings: Settings, items: list[int] | None = None, dim: int = 64, fetch: int = 100, seed: int = 0,
        served_users: int = 0, rates: list[int] | None = None, duration_s: float = 5.0) -> Path:
    """``served_users`` > 0 also serves the largest size to that many synthetic users under load."""
    params = IndexParams(expansion_search=max(128, fetch))  # as serving: serving.retrieval_expansion 128
    torch.set_num_threads(1)
    sizes = []
    serving = None
    with scratch(settings, "bench-scale-") as work:
        for n_items in items or DEFAULT_ITEMS:
            sizes.append(measure(n_items, work, dim, params, fetch, seed))
        if served_users:
            serving = served(work, sizes[-1], served_users, fetch, rates or DEFAULT_RATES, duration_s, seed)
    report = {"benchmark": "scale", "part": "ann retrieval", "dim": dim, "fetch": fetch, "index": params.to_dict(),
              "users": USERS, "history": HISTORY, "clusters": CLUSTERS, "cpu_count": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "graphs": "fp32, ORT CPU, 1 intra-op thread",
              "load_average_after": os.getloadavg(), "sizes": sizes, "served": serving}
    return save(settings, "scale", report, plot)
