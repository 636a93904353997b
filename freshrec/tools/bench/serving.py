"""``freshrec bench serving``: HTTP load against real servers (subprocesses) for each serving option.

Servers: the torch-eager teacher (freshrec.tools.bench.torch_server, the baseline), then ``freshrec serve`` with
the ORT fp32 teacher, fp32 student, int8 student (one worker) and the int8 student on two workers.
For each: single-stream closed loop (1 connection), a closed-loop max-throughput run (wrk -c32 when
installed), and an open-loop constant-rate sweep (freshrec.tools.bench.loadgen). Result cache off: the model
path is measured, not the cache. JSON + PNG (latency vs offered rate) under reports/bench/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tqdm import tqdm

from freshrec.core.accel import cuda_device_count
from freshrec.core.errors import NotFound, StageFailed
from freshrec.core.layout import Layout
from freshrec.core.settings import Settings
from freshrec.tools.bench import reports
from freshrec.tools.bench.loadgen import LoadResult, closed_loop, encode_posts, open_loop
from freshrec.tools.bench.processes import free_port, stop, wait_ready

DEFAULT_RATES = [25, 50, 100, 250, 500, 1000, 2000, 3000, 4000, 6000]  # low rates for the torch baseline
PATH = "/v1/recommend"
REQUEST = {"path": PATH, "k": 10, "exclude_seen": True}  # what request_bodies asks, as the reports state it


@dataclass(frozen=True)
class ServerSpec:
    name: str
    artifact: str | None  # None = the torch-eager baseline
    workers: int = 1


DEFAULT_SERVERS = (
    ServerSpec("torch-eager teacher", None),
    ServerSpec("ort fp32 teacher", "teacher"),
    ServerSpec("ort fp32 student", "fp32"),
    ServerSpec("ort int8 student", "int8"),
    ServerSpec("ort int8 student x2 workers", "int8", workers=2),
    ServerSpec("ort fp16 student", "fp16"),  # only where a GPU serves it (CUDA EP)
)


def _served_state(settings: Settings) -> tuple[Path, Path, str]:
    from freshrec.core.registry import open_registry

    champion = open_registry(settings).serving_state().champion
    if champion is None:
        raise NotFound("no champion in the registry: run `freshrec pipeline run` (or promote a version) first")
    online = Layout(settings.home).online
    current = online / "CURRENT"
    if not current.is_file():
        raise NotFound(f"no online snapshot ({current} missing): run the features stage first")
    return Path(champion.bundle_dir), online / current.read_text().strip(), str(champion.version)


def request_bodies(snapshot_dir: Path, k: int = 10, seed: int = 0) -> list[bytes]:
    users = pq.read_table(snapshot_dir / "users.parquet", columns=["user_id"]).column("user_id").to_pylist()
    random.Random(seed).shuffle(users)
    return [json.dumps({"user_id": str(u), "k": k, "exclude_seen": True}).encode() for u in users]


@contextlib.contextmanager
def running_server(spec: ServerSpec, settings: Settings, bundle: Path, snapshot: Path) -> Iterator[int]:
    with server_process(spec, settings, bundle, snapshot) as (port, _):
        yield port


@contextlib.contextmanager
def server_process(spec: ServerSpec, settings: Settings, bundle: Path, snapshot: Path) -> Iterator[tuple[int, subprocess.Popen]]:
    """A ready server for ``spec``: its port and its process (uvicorn's workers are its children)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(FRESHREC_HOME=str(settings.home), FRESHREC_SERVING__CACHE_TTL_S="0")
    if spec.artifact is None:
        command = [sys.executable, "-m", "freshrec.tools.bench.torch_server", "--bundle", str(bundle), "--snapshot", str(snapshot),
                   "--port", str(port), "--threads", str(max(1, settings.serving.intra_op_threads))]
    else:
        env["FRESHREC_SERVING__ARTIFACT_VARIANT"] = spec.artifact
        command = [sys.executable, "-m", "freshrec.cli", "serve", "--port", str(port), "--workers", str(spec.workers)]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    def log_tail() -> str:
        log.seek(0)
        return f"{spec.name}: {log.read().decode()[-3000:]}"

    try:
        wait_ready(process, f"http://127.0.0.1:{port}", 180, log_tail)
        yield port, process
    finally:
        stop(process)
        log.close()


def _wrk_script(bodies: list[bytes], path: Path) -> Path:
    lines = ",\n".join(f"[[{b.decode()}]]" for b in bodies)
    path.write_text(
        f"local bodies = {{\n{lines}\n}}\n"
        "local counter = 0\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        f'  return wrk.format("POST", "{PATH}", {{["Content-Type"] = "application/json"}}, bodies[counter % #bodies + 1])\n'
        "end\n"
        "done = function(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        '  io.write(string.format("FRESHREC requests=%d duration_us=%d non2xx=%d socket_errors=%d '
        'p50=%d p90=%d p99=%d p999=%d\\n", summary.requests, summary.duration, e.status, '
        "e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(90), "
        "latency:percentile(99), latency:percentile(99.9)))\n"
        "end\n"
    )
    return path


def wrk_closed_loop(port: int, bodies: list[bytes], connections: int, duration_s: float) -> dict | None:
    """wrk's closed loop (C, light on the shared CPU); None when wrk is not installed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        script = _wrk_script(bodies, Path(tmp) / "recommend.lua")
        out = subprocess.run(
            [wrk, "-t2", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "-s", str(script), f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=duration_s + 60,
        )
    match = re.search(r"FRESHREC (.*)", out.stdout)
    if match is None:
        raise StageFailed(f"wrk output not understood: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    fields = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    return {
        "mode": f"closed (wrk -t2 -c{connections})",
        "achieved_rate": round(fields["requests"] / (fields["duration_us"] / 1e6), 1),
        "requests": fields["requests"],
        "non_2xx": fields["non2xx"],
        "socket_errors": fields["socket_errors"],
        **{f"{p}_ms": fields[p] / 1000 for p in ("p50", "p90", "p99", "p999")},
    }


def held_slo(point: dict, slo_ms: float) -> bool:
    """An open-loop point (``LoadResult.summary()``) that kept p99 within the SLO with every request answered 2xx."""
    return point["p99_ms"] is not None and point["p99_ms"] <= slo_ms and point["non_2xx"] == 0 and point["unfinished"] == 0


def saturated(point: dict, slo_ms: float) -> bool:
    """A point past the knee: requests left unanswered or p99 beyond 20x the SLO."""
    return bool(point["unfinished"]) or (point["p99_ms"] or 0) > 20 * slo_ms


def measure_server(port: int, bodies: list[bytes], rates: list[int], duration_s: float, slo_ms: float,
                   connections: int, progress: tqdm) -> dict:
    requests = encode_posts("127.0.0.1", PATH, bodies)

    def run(coro) -> LoadResult:
        return asyncio.run(coro)

    run(closed_loop("127.0.0.1", port, requests, 1, 1.0))  # warm every code path once more
    progress.set_postfix_str("single stream")
    single = run(closed_loop("127.0.0.1", port, requests, 1, duration_s)).summary()
    progress.set_postfix_str("closed loop c32")
    closed = wrk_closed_loop(port, bodies, 32, duration_s) or run(
        closed_loop("127.0.0.1", port, requests, 32, duration_s)).summary()
    sweep = []
    for rate in rates:
        progress.set_postfix_str(f"open loop {rate}/s")
        result = run(open_loop("127.0.0.1", port, requests, rate, duration_s, connections)).summary()
        sweep.append(result)
        if saturated(result, slo_ms):
            break  # higher rates only take longer to say the same
    within = [r["offered_rate"] for r in sweep if held_slo(r, slo_ms)]
    return {"single_stream": single, "closed_loop": closed, "open_loop": sweep,
            "max_rate_within_slo": max(within, default=0)}


SCORING_FILES = {"int8": "student.int8.onnx", "fp32": "student.fp32.onnx", "fp16": "student.fp16.onnx",
                 "teacher": "teacher.fp32.onnx"}


def scoring_throughput(bundle: Path, variants: tuple[str, ...] = ("int8", "fp32", "fp16", "teacher"),
                       batches: tuple[int, ...] = (1, 8, 64, 256), seconds: float = 1.0,
                       history_length: int = 50) -> list[dict]:
    """Model-only throughput (requests and items scored per second) per provider, variant and batch size.

    Both paths are the serving tier's own scorers (``freshrec.serving.execution.build_scorer``): on CPU a tuned
    ``session.run``; on CUDA IOBinding into pre-allocated device buffers padded to the batch bucket, with
    CUDA graphs. Every call scores the whole catalogue for each request of the batch.
    """
    import numpy as np

    from freshrec.core.settings import ServingSettings
    from freshrec.serving.execution import CPU, CUDA, sha256_of
    from freshrec.serving.scorers import build_scorer

    n_items = len(json.loads((bundle / "vocab.json").read_text())["items"])
    providers = ([[CUDA, CPU]] if cuda_device_count() > 0 else []) + [[CPU]]
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for variant in variants:
        path = bundle / SCORING_FILES[variant]
        if not path.is_file():
            continue
        for chain in providers:
            if variant == "fp16" and chain[0] == CPU:
                continue  # fp16 is the GPU format; ORT's CPU EP runs most fp16 ops by casting back
            settings = ServingSettings(max_batch=max(batches), cuda_graphs=chain[0] == CUDA)
            try:
                scorer = build_scorer(path, sha256_of(path), settings, chain, history_length, n_items)
            except Exception as exc:  # noqa: BLE001 - one variant the provider refuses must not sink the report
                rows.append({"variant": variant, "provider": chain[0], "error": str(exc)})
                continue
            if scorer.provider != chain[0]:
                continue  # the CUDA EP is compiled in but did not take the session
            catalogue = np.arange(1, n_items + 1, dtype=np.int64)
            for batch in batches:
                history = rng.integers(1, n_items + 1, size=(batch, history_length), dtype=np.int64)
                candidates = np.ascontiguousarray(np.broadcast_to(catalogue, (batch, n_items)))
                for _ in range(5):
                    scorer.score(history, candidates)
                calls, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    scorer.score(history, candidates)
                    calls += 1
                elapsed = time.perf_counter() - start
                rows.append({"variant": variant, "provider": scorer.provider, "batch": batch,
                             "cuda_graphs": bool(getattr(scorer, "graphs", False)),
                             "ms_per_call": 1000 * elapsed / calls, "requests_per_s": batch * calls / elapsed,
                             "items_scored_per_s": batch * n_items * calls / elapsed})
    return rows


def gpu_speedups(rows: list[dict]) -> list[dict]:
    """CUDA over CPU requests/s per (variant, batch); fp16 on CUDA is compared with fp32 on CPU."""
    rows = [r for r in rows if "error" not in r]
    cpu = {(r["variant"], r["batch"]): r["requests_per_s"] for r in rows if r["provider"] == "CPUExecutionProvider"}
    out = []
    for r in rows:
        if r["provider"] == "CPUExecutionProvider":
            continue
        base = cpu.get(("fp32" if r["variant"] == "fp16" else r["variant"], r["batch"]))
        if base:
            out.append({"variant": r["variant"], "batch": r["batch"], "provider": r["provider"],
                        "speedup_vs_cpu": round(r["requests_per_s"] / base, 2)})
    return out


def run(settings: Settings, rates: list[int] | None = None, duration_s: float = 5.0,
        servers: list[str] | None = None, connections: int = 64) -> Path:
    bundle, snapshot, version = _served_state(settings)
    specs = [s for s in DEFAULT_SERVERS if (servers is None or s.name in servers)
             and (s.artifact != "fp16" or (cuda_device_count() > 0 and (bundle / SCORING_FILES["fp16"]).is_file()))]
    if not specs:
        raise NotFound(f"no server named {servers}; choose from {[s.name for s in DEFAULT_SERVERS]}")
    rates = sorted(rates or DEFAULT_RATES)
    bodies = request_bodies(snapshot)
    slo_ms = settings.release.max_p99_ms
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    with tqdm(specs, desc="bench serving", unit="server") as progress:
        for spec in progress:
            progress.set_description(spec.name)
            with running_server(spec, settings, bundle, snapshot) as port:
                results[spec.name] = measure_server(port, bodies, rates, duration_s, slo_ms, connections, progress)
    report = {
        **reports.served_header("serving", (bundle, snapshot, version), len(bodies), REQUEST, slo_ms, duration_s,
                                load_before),
        "servers": results,
        "scoring_without_http": (scoring := scoring_throughput(bundle)),
        "gpu_speedup_scoring": gpu_speedups(scoring),
        "speedup_vs_torch_eager": _speedups(results),
    }
    return reports.save(settings, "serving", report, plot)


def _speedups(results: dict[str, dict]) -> dict:
    base = results.get(DEFAULT_SERVERS[0].name)
    if base is None:
        return {}
    out = {}
    base_rate = base["max_rate_within_slo"]
    lowest = min((p["offered_rate"] for p in base["open_loop"]), default=None)
    for name, r in results.items():
        if name == DEFAULT_SERVERS[0].name:
            continue
        out[name] = {
            "max_rate_within_slo": (r["max_rate_within_slo"] / base_rate) if base_rate else None,
            # The baseline missed the SLO even at the lowest rate tried: the ratio is at least this.
            "max_rate_within_slo_at_least": (r["max_rate_within_slo"] / lowest) if not base_rate and lowest else None,
            "closed_loop_throughput": r["closed_loop"]["achieved_rate"] / max(base["closed_loop"]["achieved_rate"], 1e-9),
            "single_stream_p50": (base["single_stream"]["p50_ms"] or 0) / max(r["single_stream"]["p50_ms"] or 1e-9, 1e-9),
        }
    return out


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, key, title in ((axes[0], "p50_ms", "p50"), (axes[1], "p99_ms", "p99")):
        for name, result in report["servers"].items():
            points = [(r["offered_rate"], r[key]) for r in result["open_loop"] if r[key] is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.axhline(report["slo_p99_ms"], color="red", linestyle="--", linewidth=1, label=f"SLO {report['slo_p99_ms']} ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (req/s, open loop)")
        ax.set_title(f"/v1/recommend {title} latency")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[1].legend(fontsize=8)
    return reports.save_served_figure(fig, path, "FreshRec serving", report)
