"""``freshrec bench versions BASE CANDIDATE``: what a model change costs the serving tier, side by side.

Two registry versions (for example today's order-blind student and an order-aware or neighbour-table one)
are each copied with the live online snapshot into a scratch home and served by a real ``freshrec serve``
(int8 student, ``serving.workers`` workers, result cache off), both up at once. Then:

- single stream: one interleaved stream (each request to every server in turn, :func:`interleaved_single_stream`),
  so a burst of load from the box's other tenants hits both alike; p50/p99 and the candidate's p50 over the base;
- max rate within the SLO: open-loop sweeps (:func:`open_loop`, ``rounds`` of them), the two servers alternating
  rate by rate; a rate is held when every round kept p99 <= ``release.max_p99_ms`` with no error. The highest
  rate held (and the highest below which every rate was held, ``sustained``); the candidate's over the base;
- CPU per request: the servers' own CPU time (workers included) per answered request at a fixed rate below the
  knee (``cpu_rate``, ``cpu_rounds`` alternating runs); the base's over the candidate's is the capacity the
  candidate keeps, a figure a p99 on a shared 2-core box (the load generator runs on it too) cannot resolve to 10%.

The serving budget of the sequence issue is judged on these: single-stream p50 within +0.1 ms of the base and
max rate within 10%. Each version's student (order window, neighbour table, FLOPs per request) is reported
beside its figures. JSON + PNG under ``reports/bench/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from tqdm import tqdm

from freshrec.core.artifacts import RunLayout
from freshrec.core.errors import InvalidInput
from freshrec.core.layout import Layout
from freshrec.core.settings import Settings
from freshrec.pipeline.export.edge import pick_version
from freshrec.pipeline.training.checkpoint import read_checkpoint
from freshrec.pipeline.training.models import build_model, flops_per_request
from freshrec.tools.bench import reports
from freshrec.tools.bench.homes import copy_version
from freshrec.tools.bench.loadgen import encode_posts, interleaved_single_stream, open_loop
from freshrec.tools.bench.serving import PATH, REQUEST, ServerSpec, held_slo, request_bodies, saturated, server_process

DEFAULT_RATES = [1000, 2000, 2500, 2750, 3000, 3250, 3500, 3750, 4000, 4500, 5000, 6000]  # finer near 2 cores' knee
TARGETS = {"single_stream_p50_delta_ms": 0.1, "max_rate_ratio": 0.9}
HOST = "127.0.0.1"


def _student(bundle: Path, history_len: int) -> dict[str, Any]:
    """The served student's shape: order window, neighbour table, dimensions and FLOPs per request."""
    file = RunLayout(bundle).checkpoint("student")
    if not file.is_file():
        return {"checkpoint": None}
    config = read_checkpoint(file)["config"]
    model = build_model(config)
    rows = int(config["n_items"])
    return {
        "order_window": config.get("order_window", 0),
        "neighbours": config.get("neighbours", 0),
        "dim": config.get("dim"),
        "n_items": rows,
        "flops_per_request": flops_per_request(model, history_len, rows),
    }


def _sweep(ports: dict[str, int], requests: list[bytes], rates: list[int], duration_s: float, slo_ms: float,
           connections: int, progress: tqdm) -> dict[str, list[dict]]:
    """Open loop at each rate, the servers alternating rate by rate; a saturated server drops out."""
    sweeps: dict[str, list[dict]] = {name: [] for name in ports}
    live = set(ports)
    for rate in rates:
        for name in [n for n in ports if n in live]:
            progress.set_postfix_str(f"{name} {rate}/s")
            result = asyncio.run(open_loop(HOST, ports[name], requests, rate, duration_s, connections)).summary()
            sweeps[name].append(result)
            if saturated(result, slo_ms):
                live.discard(name)  # higher rates only take longer to say the same
        progress.update(1)
        if not live:
            break
    return sweeps


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn's workers) so far."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def _cpu_per_request(ports: dict[str, int], pids: dict[str, int], requests: list[bytes], rate: int, duration_s: float,
                     rounds: int, connections: int, progress: tqdm) -> dict[str, list[float]]:
    """Server CPU microseconds per answered request at a fixed open-loop rate below the knee, the servers alternating:
    what the model costs each request, free of the tail noise that moves a p99 on a shared box."""
    out: dict[str, list[float]] = {name: [] for name in ports}
    for n in range(rounds):
        for name in ports if n % 2 == 0 else reversed(ports):
            progress.set_postfix_str(f"CPU per request, {name} {rate}/s")
            before = _cpu_seconds(pids[name])
            result = asyncio.run(open_loop(HOST, ports[name], requests, rate, duration_s, connections))
            answered = int(result.latencies_ms.size)
            out[name].append(round((_cpu_seconds(pids[name]) - before) / max(answered, 1) * 1e6, 1))
        progress.update(1)
    return out


def _rates_held(rounds: list[list[dict]], rates: list[int], slo_ms: float) -> dict[str, int]:
    """``max``: the highest rate held (p99 within the SLO, no error) in every round; ``sustained``: the highest rate
    below which every rate was held in every round too. A rate a round stopped short of counts as not held."""
    by_rate = {rate: [next((p for p in sweep if p["offered_rate"] == rate), None) for sweep in rounds] for rate in rates}
    held = [rate for rate in rates if all(p is not None and held_slo(p, slo_ms) for p in by_rate[rate])]
    sustained = 0
    for rate in rates:
        if rate not in held:
            break
        sustained = rate
    return {"max": max(held, default=0), "sustained": sustained}


def run(settings: Settings, base: str, candidate: str, rates: list[int] | None = None, duration_s: float = 5.0,
        single_stream_s: float = 20.0, connections: int = 64, rounds: int = 2, cpu_rate: int = 2000,
        cpu_rounds: int = 4) -> Path:
    if base == candidate:
        raise InvalidInput(f"compare two different versions (both are {base})")
    views = {"base": pick_version(settings, base), "candidate": pick_version(settings, candidate)}
    rates = sorted(rates or DEFAULT_RATES)
    slo_ms = settings.release.max_p99_ms
    workers = settings.serving.workers or min(os.cpu_count() or 1, 8)
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        ports: dict[str, int] = {}
        pids: dict[str, int] = {}
        for role, view in views.items():
            home = stack.enter_context(reports.scratch(settings, f"bench-versions-{role}-"))
            scratch_settings = copy_version(settings, home, str(view.version), "bench-versions")
            online = Layout(home).online
            snapshot = online / (online / "CURRENT").read_text().strip()
            spec = ServerSpec(f"{role} {view.version}", "int8", workers=workers)
            ports[role], process = stack.enter_context(server_process(spec, scratch_settings, Path(view.bundle_dir), snapshot))
            pids[role] = process.pid
        bodies = request_bodies(snapshot)
        requests = encode_posts(HOST, PATH, bodies)
        with tqdm(total=rounds * len(rates) + cpu_rounds + 1, desc="bench versions", unit="step") as progress:
            progress.set_postfix_str("warm-up + interleaved single stream")
            asyncio.run(interleaved_single_stream(HOST, ports, requests, 2.0))
            single = {name: r.summary() for name, r in
                      asyncio.run(interleaved_single_stream(HOST, ports, requests, single_stream_s)).items()}
            progress.update(1)
            cpu = _cpu_per_request(ports, pids, requests, cpu_rate, duration_s, cpu_rounds, connections, progress)
            runs = [_sweep(ports, requests, rates, duration_s, slo_ms, connections, progress) for _ in range(rounds)]
    sweeps = {name: [run[name] for run in runs] for name in ports}
    held = {name: _rates_held(sweeps[name], rates, slo_ms) for name in ports}
    max_rate = {name: held[name]["max"] for name in ports}
    p50 = {name: single[name]["p50_ms"] for name in ports}
    delta = round(p50["candidate"] - p50["base"], 4) if None not in p50.values() else None
    ratio = round(max_rate["candidate"] / max_rate["base"], 3) if max_rate["base"] else None
    sustained = held["base"]["sustained"]
    cpu_median = {name: float(np.median(values)) for name, values in cpu.items()}
    history_len = settings.data.online_history_length
    report = {
        **reports.served_header("versions", (Path(views["candidate"].bundle_dir), snapshot, str(views["candidate"].version)),
                                len(bodies), REQUEST, slo_ms, duration_s, load_before),
        "workers": workers,
        "connections": connections,
        "versions": {role: {"version": str(view.version), "bundle": Path(view.bundle_dir).name,
                            "student": _student(Path(view.bundle_dir), history_len),
                            "single_stream": single[role], "open_loop_rounds": sweeps[role],
                            "max_rate_within_slo": max_rate[role],
                            "sustained_rate_within_slo": held[role]["sustained"],
                            "cpu_us_per_request": cpu[role], "cpu_us_per_request_median": cpu_median[role]}
                     for role, view in views.items()},
        "cpu_rate": cpu_rate,
        # max rate of a CPU-bound server scales as 1 / CPU per request: the capacity the candidate keeps
        "capacity_ratio_from_cpu": round(cpu_median["base"] / cpu_median["candidate"], 3) if cpu_median["candidate"] else None,
        "rounds": rounds,
        "sustained_rate_ratio": round(held["candidate"]["sustained"] / sustained, 3) if sustained else None,
        "single_stream_s": single_stream_s,
        "single_stream_method": "interleaved",
        "targets": {
            "single_stream_p50_delta_ms": {"value": delta, "target": f"<= {TARGETS['single_stream_p50_delta_ms']}",
                                           "met": delta is not None and delta <= TARGETS["single_stream_p50_delta_ms"]},
            "max_rate_ratio": {"value": ratio, "target": f">= {TARGETS['max_rate_ratio']}",
                               "met": ratio is not None and ratio >= TARGETS["max_rate_ratio"]},
        },
    }
    return reports.save(settings, f"versions-{views['base'].version}-{views['candidate'].version}", report, plot)


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, cpu) = plt.subplots(1, 3, figsize=(16, 4.5))
    for role, entry in report["versions"].items():
        student = entry["student"]
        label = (f"{role} v{entry['version']} (window {student.get('order_window')}, "
                 f"neighbours {student.get('neighbours')})")
        for n, sweep in enumerate(entry["open_loop_rounds"]):
            points = [(r["offered_rate"], r["p99_ms"]) for r in sweep if r["p99_ms"] is not None]
            if points:
                left.plot(*zip(*points, strict=True), marker="o", linestyle="-" if n == 0 else ":",
                          color="C0" if role == "base" else "C1", label=f"{label}, round {n + 1}")
        single = entry["single_stream"]
        right.bar([f"{role} p50", f"{role} p99"], [single["p50_ms"] or 0, single["p99_ms"] or 0])
        cpu.bar(role, entry["cpu_us_per_request_median"])
        cpu.scatter([role] * len(entry["cpu_us_per_request"]), entry["cpu_us_per_request"], color="black", s=10)
    left.axhline(report["slo_p99_ms"], color="red", linestyle="--", label=f"SLO {report['slo_p99_ms']} ms")
    left.set(xlabel="offered rate (req/s)", ylabel="p99 (ms)", yscale="log", title="open loop, cache off")
    left.legend(fontsize=8)
    targets = report["targets"]
    right.set(ylabel="ms", title=(f"single stream (interleaved): p50 delta {targets['single_stream_p50_delta_ms']['value']} ms; "
                                  f"max-rate ratio {targets['max_rate_ratio']['value']}"))
    right.title.set_fontsize(9)
    cpu.set(ylabel="server CPU us per request", title=(f"at {report['cpu_rate']} req/s: capacity ratio "
                                                       f"{report['capacity_ratio_from_cpu']}"))
    cpu.title.set_fontsize(9)
    return reports.save_served_figure(fig, path, "base vs candidate version", report)
