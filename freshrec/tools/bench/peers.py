"""``freshrec bench peers``: FreshRec's ``/v1/recommend`` against the serving frameworks a user would pick instead.

Ray Serve (``@serve.batch``), BentoML (adaptive batching), LitServe (batching) and KServe's Python model server
(which does not batch: KServe batches outside it) serve the champion's int8 ONNX graph over the same online
snapshot, with FreshRec's contract and FreshRec's per-request work (``freshrec.tools.bench.peer_apps``). Every
server gets the same checks: its answers for a sample of users must equal FreshRec's, then the serving bench's
single stream and open-loop sweep (``serving.measure_server``). The report evaluates two targets: FreshRec's max
rate within the p99 SLO >= 2x the best peer's, and its single-stream p50 <= 0.5x the best peer's. The peers live
in their own venv (the ``peers`` extra of pyproject.toml), built under FRESHREC_HOME on first use, so their web
stacks never touch the main venv's pins.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
from tqdm import tqdm

import freshrec
from freshrec.core.errors import NotFound, StageFailed
from freshrec.core.layout import Layout
from freshrec.core.settings import Settings
from freshrec.tools.bench import reports
from freshrec.tools.bench.peer_apps import configs
from freshrec.tools.bench.processes import free_port, wait_ready
from freshrec.tools.bench.serving import PATH, REQUEST, ServerSpec, _served_state, measure_server, request_bodies, running_server

DEFAULT_RATES = [50, 100, 200, 400, 700, 1000, 1500, 2000, 3000, 4000, 6000]
COLD_USER = "freshrec-bench-unknown-user"  # checks the cold-start path too
SCORE_TOLERANCE = 1e-4  # relative: the same ONNX session, but a batch of one vs FreshRec's batches


@dataclass(frozen=True)
class Peer:
    """A peer server: how to start it in the peers venv, and the configuration the report states."""

    name: str
    command: Callable[[Path, int], list[str]]  # (peers venv bin/, port) -> argv
    config: dict


PEERS = (
    Peer("ray-serve", lambda bin_, port: [str(bin_ / "python"), "-m", "freshrec.tools.bench.peer_apps.ray_app",
                                          "--port", str(port)], configs.RAY_SERVE),
    Peer("bentoml", lambda bin_, port: [str(bin_ / "bentoml"), "serve", "freshrec.tools.bench.peer_apps.bento_app:Recommend",
                                        "--host", "127.0.0.1", "--port", str(port)], configs.BENTOML),
    Peer("litserve", lambda bin_, port: [str(bin_ / "python"), "-m", "freshrec.tools.bench.peer_apps.litserve_app",
                                         "--port", str(port)], configs.LITSERVE),
    Peer("kserve", lambda bin_, port: [str(bin_ / "python"), "-m", "freshrec.tools.bench.peer_apps.kserve_app",
                                       "--port", str(port)], configs.KSERVE),
)
FRESHREC_SERVERS = (ServerSpec("freshrec int8 x1 worker", "int8"), ServerSpec("freshrec int8 x2 workers", "int8", workers=2))


def peer_requirements(pyproject: Path) -> list[str]:
    """The ``peers`` extra's pins plus the main venv's numpy: the peers venv borrows onnxruntime and pyarrow
    (compiled against that numpy) from the main venv, so both sides of the borrow must agree on it."""
    try:
        extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
        pins = list(extras["peers"])
    except (OSError, KeyError) as exc:
        raise NotFound(f"no `peers` optional-dependency group in {pyproject}: run the bench from a FreshRec checkout") from exc
    return [*pins, f"numpy=={metadata.version('numpy')}"]


def ensure_peers_venv(folder: Path, requirements: list[str]) -> Path:
    """``folder`` as a venv holding ``requirements`` (built once, rebuilt when they change); returns its bin/.

    The .pth file goes in after pip has finished, so pip never sees (nor tries to replace) the main venv's
    packages; once there it puts this checkout and then the main venv's site-packages *after* the peers' own
    packages on sys.path: freshrec and onnxruntime come from the main venv, the web stacks from the peers'.
    """
    bin_ = folder / "bin"
    stamp = folder / "freshrec-peers.txt"
    wanted = "\n".join(requirements)
    if stamp.is_file() and stamp.read_text() == wanted and (bin_ / "python").is_file():
        return bin_
    _run_step([sys.executable, "-m", "venv", "--clear", str(folder)], "create the peers venv")
    _run_step([str(bin_ / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
              "install the peers (pip)")
    site = Path(_run_step([str(bin_ / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          "locate the peers venv's site-packages").strip())
    checkout = Path(freshrec.__file__).resolve().parents[1]
    (site / "zz_freshrec_main.pth").write_text(f"{checkout}\n{sysconfig.get_paths()['purelib']}\n")
    stamp.write_text(wanted)
    return bin_


def _run_step(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise StageFailed(f"cannot {what}: {' '.join(command[:4])} ... exited {done.returncode}: "
                          f"{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


@contextlib.contextmanager
def running_peer(peer: Peer, bin_: Path, env: dict[str, str], workdir: Path) -> Iterator[int]:
    """The peer listening on a free port; its whole process group (workers, Ray's raylet) ends afterwards."""
    port = free_port()
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(peer.command(bin_, port), env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)

    def log_tail() -> str:
        log.seek(0)
        return f"{peer.name}: {log.read().decode(errors='replace')[-3000:]}"

    try:
        wait_ready(process, f"http://127.0.0.1:{port}", 300, log_tail, error=StageFailed)
        yield port
    finally:
        _stop_group(process)
        log.close()


def _stop_group(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """TERM to the server's own process group (it was started in a new session), then KILL whatever of the group
    is left once the leader has exited or ``timeout_s`` has passed (a worker a framework failed to reap)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def fetch_answers(port: int, user_ids: list[str], k: int = 10) -> dict[str, dict]:
    """One request at a time (a batch of one everywhere), so the answers are comparable item for item."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        answers = {}
        for user in user_ids:
            response = client.post(PATH, json={"user_id": user, "k": k, "exclude_seen": True})
            answers[user] = response.json() if response.status_code == 200 else {"status": response.status_code}
        return answers


def answer_mismatch(expected: dict, actual: dict, tolerance: float = SCORE_TOLERANCE) -> str | None:
    """Why ``actual`` is not FreshRec's ``expected`` answer (None when equal): same fields, same items in the
    same order, scores equal within ``tolerance`` (relative)."""
    for field in ("user_id", "model_version", "variant", "reason"):
        if expected.get(field) != actual.get(field):
            return f"{field}: {actual.get(field)!r} != {expected.get(field)!r}"
    want, got = expected.get("items", []), actual.get("items", [])
    if [i["item_id"] for i in want] != [i["item_id"] for i in got]:
        return f"items differ: {[i['item_id'] for i in got][:5]}... != {[i['item_id'] for i in want][:5]}..."
    for w, g in zip(want, got):
        if abs(w["score"] - g["score"]) > tolerance * max(1.0, abs(w["score"])):
            return f"score of {w['item_id']}: {g['score']} != {w['score']}"
    return None


def correctness(expected: dict[str, dict], actual: dict[str, dict]) -> dict:
    mismatches = {u: why for u in expected if (why := answer_mismatch(expected[u], actual.get(u, {})))}
    return {"users_checked": len(expected), "equal": len(expected) - len(mismatches),
            "mismatches": dict(list(mismatches.items())[:5])}


def sustained_rate(result: dict, slo_ms: float) -> float:
    """The highest offered rate at which that point *and every lower one* met the SLO (``measure_server``'s
    max rate counts any point that did): on a shared box one lucky point after a missed one says little."""
    sustained = 0.0
    for point in sorted(result["open_loop"], key=lambda p: p["offered_rate"]):
        if point["p99_ms"] is None or point["p99_ms"] > slo_ms or point["non_2xx"] or point["unfinished"]:
            break
        sustained = point["offered_rate"]
    return sustained


def targets(results: dict[str, dict], freshrec_names: list[str], peer_names: list[str]) -> dict:
    """The two targets, FreshRec's best configuration against the best peer, per measure; the sustained rates
    (:func:`sustained_rate`, stored per server by :func:`run`) go beside the first, as context."""
    ours = [results[n] for n in freshrec_names if n in results]
    theirs = {n: results[n] for n in peer_names if n in results}
    if not ours or not theirs:
        return {}
    our_rate = max(r["max_rate_within_slo"] for r in ours)
    best_rate_peer = max(theirs, key=lambda n: theirs[n]["max_rate_within_slo"])
    peer_rate = theirs[best_rate_peer]["max_rate_within_slo"]
    our_p50 = min(r["single_stream"]["p50_ms"] for r in ours)
    best_p50_peer = min(theirs, key=lambda n: theirs[n]["single_stream"]["p50_ms"])
    peer_p50 = theirs[best_p50_peer]["single_stream"]["p50_ms"]
    rate_ratio = our_rate / peer_rate if peer_rate else None
    our_sustained = max(r["sustained_rate_within_slo"] for r in ours)
    peer_sustained = max(r["sustained_rate_within_slo"] for r in theirs.values())
    return {
        "max_rate_within_slo_vs_best_peer": {
            "freshrec": our_rate, "best_peer": best_rate_peer, "peer": peer_rate, "value": rate_ratio, "target": ">= 2.0",
            # No peer met the SLO at any rate tried: FreshRec meets the target by meeting it at all.
            "met": (rate_ratio >= 2.0) if rate_ratio is not None else our_rate > 0,
            "sustained": {"freshrec": our_sustained, "best_peer": peer_sustained,
                          "value": our_sustained / peer_sustained if peer_sustained else None}},
        "single_stream_p50_vs_best_peer": {
            "freshrec_ms": our_p50, "best_peer": best_p50_peer, "peer_ms": peer_p50, "value": our_p50 / peer_p50,
            "target": "<= 0.5", "met": our_p50 / peer_p50 <= 0.5},
    }


def _peer_env(settings: Settings, bundle: Path, snapshot: Path, version: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(FRESHREC_HOME=str(settings.home), FRESHREC_PEER_BUNDLE=str(bundle), FRESHREC_PEER_SNAPSHOT=str(snapshot),
               FRESHREC_PEER_MODEL_VERSION=version,
               FRESHREC_PEER_HISTORY_LENGTH=str(settings.data.online_history_length),
               FRESHREC_PEER_MAX_CANDIDATES=str(settings.serving.max_candidates),
               BENTOML_HOME=str(workdir / "bentoml"), RAY_USAGE_STATS_ENABLED="0", BENTOML_DO_NOT_TRACK="true")
    return env


@dataclass(frozen=True)
class Load:
    """What every server is put through: the same bodies, rates, durations and SLO."""

    bodies: list[bytes]
    rates: list[int]
    duration_s: float
    slo_ms: float
    connections: int

    def measure(self, port: int, progress: tqdm) -> dict:
        result = measure_server(port, self.bodies, self.rates, self.duration_s, self.slo_ms, self.connections, progress)
        return {**result, "sustained_rate_within_slo": sustained_rate(result, self.slo_ms)}


def run(settings: Settings, rates: list[int] | None = None, duration_s: float = 5.0, peers: list[str] | None = None,
        sample_users: int = 100, connections: int = 64, venv: Path | None = None) -> Path:
    """``venv``: where the peers venv lives (default FRESHREC_HOME/bench/peers/venv; tests keep one in a cache)."""
    chosen = [p for p in PEERS if peers is None or p.name in peers]
    if not chosen:
        raise NotFound(f"no peer named {peers}; choose from {[p.name for p in PEERS]}")
    bundle, snapshot, version = _served_state(settings)
    work = Layout(settings.home).home / "bench" / "peers"
    work.mkdir(parents=True, exist_ok=True)
    bin_ = ensure_peers_venv(venv or work / "venv", peer_requirements(Path(freshrec.__file__).resolve().parents[1] / "pyproject.toml"))
    load = Load(request_bodies(snapshot), sorted(rates or DEFAULT_RATES), duration_s, settings.release.max_p99_ms, connections)
    sample = [*(json.loads(b)["user_id"] for b in load.bodies[:sample_users]), COLD_USER]
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    answers: dict[str, dict[str, dict]] = {}
    with tqdm(total=len(FRESHREC_SERVERS) + len(chosen), desc="bench peers", unit="server") as progress:
        for spec in FRESHREC_SERVERS:
            progress.set_description(spec.name)
            with running_server(spec, settings, bundle, snapshot) as port:
                answers[spec.name] = fetch_answers(port, sample)
                results[spec.name] = load.measure(port, progress)
            progress.update()
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            env = _peer_env(settings, bundle, snapshot, version, Path(tmp))
            for peer in chosen:
                progress.set_description(peer.name)
                with running_peer(peer, bin_, env, Path(tmp)) as port:
                    answers[peer.name] = fetch_answers(port, sample)
                    results[peer.name] = load.measure(port, progress)
                progress.update()
    reference = FRESHREC_SERVERS[0].name
    report = {
        **reports.served_header("peers", (bundle, snapshot, version), len(load.bodies), REQUEST, load.slo_ms,
                                duration_s, load_before),
        "peer_versions": _installed_versions(bin_),
        "configs": {**{s.name: {"command": f"freshrec serve --workers {s.workers}", "artifact": s.artifact,
                                "cache_ttl_s": 0} for s in FRESHREC_SERVERS},
                    **{p.name: p.config for p in chosen}},
        "answers_reference": reference,
        "answers_equal_freshrec": {name: correctness(answers[reference], a) for name, a in answers.items()
                                   if name != reference},
        "servers": results,
        "targets": targets(results, [s.name for s in FRESHREC_SERVERS], [p.name for p in chosen]),
    }
    return reports.save(settings, "peers", report, plot)


def _installed_versions(bin_: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
            "('ray', 'bentoml', 'litserve', 'kserve', 'fastapi', 'starlette', 'pydantic', 'uvicorn', 'onnxruntime-gpu')}))")
    return json.loads(_run_step([str(bin_ / "python"), "-c", code], "read the peers' versions"))


def plot(report: dict, path: Path) -> Path:
    """p99 against the offered rate per server, then the two measures the targets compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = report["servers"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for name, result in servers.items():
        points = [(r["offered_rate"], r["p99_ms"]) for r in result["open_loop"] if r["p99_ms"] is not None]
        if points:
            axes[0].plot(*zip(*points), marker="o", label=name)
    axes[0].axhline(report["slo_p99_ms"], color="red", linestyle="--", linewidth=1, label=f"SLO {report['slo_p99_ms']} ms")
    axes[0].set(xscale="log", yscale="log", xlabel="offered rate (req/s, open loop)", ylabel="p99 latency (ms)",
                title="/v1/recommend p99 vs offered rate")
    axes[0].grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    names = list(servers)
    colors = ["tab:green" if n.startswith("freshrec") else "tab:gray" for n in names]
    axes[1].barh(names, [servers[n]["max_rate_within_slo"] for n in names], color=colors, label="any point")
    axes[1].barh(names, [servers[n]["sustained_rate_within_slo"] for n in names], color="none", edgecolor="black",
                 hatch="//", label="sustained (every lower rate too)")
    axes[1].set(xlabel="req/s", title=f"max offered rate with p99 <= {report['slo_p99_ms']} ms")
    axes[1].legend(fontsize=8)
    axes[2].barh(names, [servers[n]["single_stream"]["p50_ms"] or 0 for n in names], color=colors)
    axes[2].set(xlabel="ms", title="single-stream p50")
    for ax in axes[1:]:
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
    return reports.save_served_figure(fig, path, "FreshRec vs peers, int8 student", report)
