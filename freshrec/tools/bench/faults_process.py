"""Process and disk faults of ``freshrec bench faults``: kill -9 of a serving worker under load, kill -9 of
serving during a hot swap, and a full disk under the ingestion log.

Each scenario takes a :class:`~freshrec.tools.bench.faults_world.FaultWorld` and returns its counts with a
verdict (``faults_traffic.judged``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psutil

from freshrec.core.errors import StageFailed
from freshrec.core.layout import Layout
from freshrec.tools.bench.faults_traffic import HOST, Traffic, champion_of, judged, under_traffic, wait_for
from freshrec.tools.bench.faults_world import ADMIN_TOKEN, FaultWorld, scoring_graph
from freshrec.tools.bench.processes import free_port, wait_ready
from freshrec.tools.bench.realtime_ops import _Process

DAMAGE = ("truncated", "corrupted", "checksum_mismatch")


def damage(path: Path, kind: str, n_items: int, dim: int) -> None:
    """Truncated (half the file), corrupted (bytes flipped mid-file, same size) or checksum-mismatched (a
    valid graph of another model: loads fine, only its sha256 gives it away)."""
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupted":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    else:
        path.write_bytes(scoring_graph(n_items, dim, seed=999))


def _workers(server: _Process) -> set[int]:
    """uvicorn's worker processes (multiprocessing spawn children of the supervisor)."""
    pids = set()
    for child in psutil.Process(server.popen.pid).children():
        with contextlib.suppress(psutil.Error):  # a killed worker is a zombie until the supervisor reaps it
            if child.status() != psutil.STATUS_ZOMBIE and any("spawn_main" in part for part in child.cmdline()):
                pids.add(child.pid)
    return pids


def _ready_workers(port: int) -> set[int]:
    return {w["pid"] for w in httpx.get(f"http://{HOST}:{port}/v1/models", timeout=2).json()["workers"]}


def worker_kill(world: FaultWorld, live_s: float) -> dict:
    """kill -9 of one of two workers under load: the supervisor replaces it; the answers lost are at most
    the requests in flight on (or sent on a stale keep-alive connection to) the dead worker, one per client."""
    concurrency = 8
    with world.serve(workers=2) as server:
        if wait_for(lambda: len(_ready_workers(server.port)) == 2, 60) is None:
            raise StageFailed(f"two workers never came up: {server.tail()}")

        def fault(traffic: Traffic) -> float | None:
            time.sleep(live_s)
            victim = min(_workers(server))
            traffic.mark("kill")
            os.kill(victim, signal.SIGKILL)
            back = wait_for(lambda: len(_ready_workers(server.port) & _workers(server) - {victim}) == 2, 60)
            traffic.mark("worker_back")
            time.sleep(live_s)
            return back

        traffic, back = under_traffic(server.port, world.users, fault, concurrency=concurrency)
    failed = traffic.counts("kill", "end")["failed"]
    lost = sum(n for status, n in failed.items() if not status[:1].isdigit())  # transport errors: no answer
    result = {"workers": 2, "clients": concurrency, "before": traffic.counts("start", "kill"),
              "kill_to_worker_back": traffic.counts("kill", "worker_back"), "after": traffic.counts("worker_back", "end"),
              "answers_lost": lost, "worker_replaced_s": back, "recovered_s": traffic.recovered_s("kill")}
    return judged(result, lost_at_most_one_per_client=lost <= concurrency,
                  no_failure_but_lost_answers=lost == sum(failed.values()),
                  worker_replaced=back is not None,
                  all_ok_after=result["after"]["sent"] > 0 and not result["after"]["failed"])


def kill_during_swap(world: FaultWorld, live_s: float) -> dict:
    """Serving is killed (-9, the whole process group) while it swaps to a new champion, and the new
    champion's file is damaged before the restart: it must come back on the last good one (``previous``)."""
    server = world.serve()
    server.start()
    old, new = champion_of(server.port), world.register(seed=2)
    try:
        def fault(traffic: Traffic) -> dict:
            time.sleep(live_s)
            world.registry.promote(int(new), actor="bench-faults", reason="swap to be killed")
            traffic.mark("promoted")
            time.sleep(0.1)  # the reconciler polls every 0.2 s: it is noticing or loading the new version
            swapping = champion_of(server.port) == old
            server.kill()
            traffic.mark("kill")
            damage(world.artifact(new), "corrupted", world.n_items, world.dim)
            server.start()
            traffic.mark("restarted")
            time.sleep(live_s)
            return {"swap_in_progress_at_kill": swapping, "refused_after_restart": _refused(server.port)}

        traffic, seen = under_traffic(server.port, world.users, fault)
    finally:
        server.stop()
    after = traffic.counts("restarted", "end")
    result = {"old_champion": old, "new_champion": new, **seen, "before": traffic.counts("start", "promoted"),
              "swapping": traffic.counts("promoted", "kill"), "down": traffic.counts("kill", "restarted"),
              "after_restart": after,
              "recovered_s": traffic.recovered_s("kill")}
    return judged(result, nothing_failed_before=not result["before"]["failed"],
                  after_restart_all_ok=after["sent"] > 0 and not after["failed"],
                  served_by_last_good_champion=set(after["served_by"]) == {old},
                  damaged_champion_refused=new in seen["refused_after_restart"])


def _refused(port: int) -> list[str]:
    described = httpx.post(f"http://{HOST}:{port}/admin/reconcile", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                           timeout=30).json()
    return [f["version"] for f in described["refused"]]


@contextlib.contextmanager
def _small_filesystem(folder: Path, size: int) -> Iterator[str]:
    """A tmpfs of ``size`` bytes mounted on ``folder`` when this process may mount (yields "tmpfs"), else
    nothing (yields "rlimit_fsize": the server is started under RLIMIT_FSIZE instead)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        yield "tmpfs" if mounted else "rlimit_fsize"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _grow(folder: Path, how: str) -> bool:
    """Free space again (tmpfs only: a file size limit cannot be lifted from outside the process)."""
    if how != "tmpfs":
        return False
    return subprocess.run(["mount", "-o", "remount,size=8m", str(folder)], capture_output=True).returncode == 0


def _logged_ids(layout: Layout) -> set[str]:
    """Every event_id in the ingestion log's segments, open and sealed; a torn last line is skipped."""
    ids = set()
    for path in layout.landing.rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                ids.add(orjson.loads(line)["event_id"])
    return ids


def _post_batches(port: int, world: FaultWorld, tag: str, batches: int, per_batch: int) -> list[tuple[str, list[str]]]:
    """Sequential event batches of unique ids; returns (status or error, ids) per batch."""
    out = []
    with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=10) as client:
        for b in range(batches):
            ids = [f"{tag}-{b}-{n}" for n in range(per_batch)]
            events = [{"user_id": world.users[n % len(world.users)], "item_id": world.items[n % len(world.items)],
                       "event_type": "click", "value": 1.0, "event_id": i} for n, i in enumerate(ids)]
            try:
                status = str(client.post("/v1/events", json={"events": events}).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            out.append((status, ids))
    return out


def _disk_full_server(world: FaultWorld, how: str, size: int) -> _Process:
    if how == "tmpfs":
        return world.serve()
    port = free_port()
    command = ["prlimit", f"--fsize={size}", "--", sys.executable, "-m", "freshrec.cli", "serve", "--host", HOST,
               "--port", str(port), "--workers", "1"]  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
    return _Process("serve", port, command, world.env(), world.home / f"serve-{port}.log",
                    lambda p: wait_ready(p.popen, f"http://{HOST}:{port}", 180, p.tail))


def disk_full(world: FaultWorld, batches: int = 40, per_batch: int = 50, size: int = 256 * 1024) -> dict:
    """POST /v1/events while the lake's landing area fills up: 503 once a write fails, never an
    acknowledgement for an event the log does not hold; recommendations keep being served."""
    layout = Layout(world.home)
    with _small_filesystem(layout.lake / "landing", size) as how, _disk_full_server(world, how, size) as server:
        filling = _post_batches(server.port, world, "full", batches, per_batch)
        recommend = httpx.post(f"http://{HOST}:{server.port}/v1/recommend", json={"user_id": world.users[0]}, timeout=10)
        grown = _grow(layout.lake / "landing", how)
        resumed = _post_batches(server.port, world, "grown", 3, per_batch) if grown else []
        alive = httpx.get(f"http://{HOST}:{server.port}/healthz", timeout=10).status_code == 200
        logged = _logged_ids(layout)
    statuses = [s for s, _ in filling]
    acked = {i for s, ids in filling + resumed if s == "200" for i in ids}
    first_full = statuses.index("503") if "503" in statuses else len(statuses)
    result = {"how": how, "size_bytes": size, "batches_sent": len(filling), "events_per_batch": per_batch,
              "statuses": {s: statuses.count(s) for s in set(statuses)}, "first_503_at_batch": first_full,
              "acknowledged_after_first_503": statuses[first_full:].count("200"),
              "events_acknowledged": len(acked), "acknowledged_not_in_log": len(acked - logged),
              "recommend_while_full": recommend.status_code, "space_freed": grown,
              "after_space_freed": [s for s, _ in resumed], "server_alive": alive}
    return judged(result, answered_503_when_full="503" in statuses,
                  only_200_or_503=set(statuses) <= {"200", "503"},
                  nothing_acknowledged_lost=not result["acknowledged_not_in_log"],
                  recommend_unaffected=recommend.status_code == 200, server_alive=alive,
                  accepts_again_once_space_freed=not grown or all(s == "200" for s, _ in resumed))
