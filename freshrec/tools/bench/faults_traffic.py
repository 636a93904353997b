"""Steady /v1/recommend traffic while a fault is injected, and what the answers say: counts by status,
which version served, when the service came back. Shared by the scenarios of ``freshrec bench faults``.

Paced, not open loop: each of ``concurrency`` clients sends a request every ``pace_s`` on a keep-alive
connection of its own (a lost connection is reopened by the next request), so the counts measure the
fault, not the load. The fault runs on a thread beside the traffic and marks its moments (``mark``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

HOST = "127.0.0.1"
SHED = "503 Overloaded"


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the request went out
    status: str  # "200", "503 Overloaded" (the status and the body's error), ... or the transport error's name
    version: str | None  # model_version of a 200


@dataclass
class Traffic:
    """What the clients saw, and the moments the fault marked (name -> time.monotonic())."""

    answers: list[Answer] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()

    def between(self, start: str | None = None, end: str | None = None) -> list[Answer]:
        lo = self.marks[start] if start else -float("inf")
        hi = self.marks[end] if end else float("inf")
        return [a for a in self.answers if lo <= a.sent < hi]

    def counts(self, start: str | None = None, end: str | None = None) -> dict:
        """Requests sent, answered 200, shed (503 Overloaded: load shedding, which a box shared with
        other work can trigger in any scenario, reported apart), failed by status, and the versions
        that served, in a phase."""
        answers = self.between(start, end)
        statuses = Counter(a.status for a in answers)
        return {"sent": len(answers), "ok": statuses.pop("200", 0), "shed": statuses.pop(SHED, 0),
                "failed": dict(statuses), "served_by": dict(Counter(a.version for a in answers if a.version is not None))}

    def recovered_s(self, fault: str) -> float | None:
        """Seconds from the fault to the first request after which no answer failed (a 200 or shed; 0 when
        nothing failed); None when the service never came back before the traffic stopped."""
        after = self.between(fault)
        failed = [n for n, a in enumerate(after) if a.status not in ("200", SHED)]
        if not failed:
            return 0.0
        rest = after[failed[-1] + 1:]
        return round(rest[0].sent - self.marks[fault], 3) if rest else None


async def _client(url: str, user: Callable[[int], str], pace_s: float, stop: asyncio.Event, traffic: Traffic) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.monotonic()
            try:
                r = await client.post("/v1/recommend", json={"user_id": user(n), "k": 10})
                body = r.json()
                status = "200" if r.status_code == 200 else f"{r.status_code} {body.get('error', '')}".strip()
                traffic.answers.append(Answer(sent, status, body.get("model_version") if status == "200" else None))
            except httpx.HTTPError as exc:  # the server died under the request: its answer is lost
                traffic.answers.append(Answer(sent, type(exc).__name__, None))
            await asyncio.sleep(max(0.0, sent + pace_s - time.monotonic()))


def _user_picker(users: list[str], client: int) -> Callable[[int], str]:
    """Client ``client``'s n-th user: spread over the snapshot, a different sequence per client."""
    return lambda n: users[((n + client) * 7919) % len(users)]


def under_traffic(port: int, users: list[str], fault: Callable[[Traffic], Any], *, concurrency: int = 8,
                  pace_s: float = 0.02, settle_s: float = 0.5) -> tuple[Traffic, Any]:
    """Run ``fault(traffic)`` on a thread while the clients send; ``settle_s`` of traffic before and after.
    Returns the traffic and what the fault returned (its exceptions propagate)."""
    traffic = Traffic()

    async def main() -> Any:
        stop = asyncio.Event()
        clients = [asyncio.create_task(_client(f"http://{HOST}:{port}", _user_picker(users, c), pace_s, stop, traffic))
                   for c in range(concurrency)]
        try:
            await asyncio.sleep(settle_s)
            traffic.mark("start")
            result = await asyncio.to_thread(fault, traffic)
            await asyncio.sleep(settle_s)
            traffic.mark("end")
            return result
        finally:
            stop.set()
            await asyncio.gather(*clients)

    result = asyncio.run(main())
    traffic.answers.sort(key=lambda a: a.sent)
    return traffic, result


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` held (exceptions count as not yet), None past ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if predicate():
                return round(time.monotonic() - started, 3)
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        time.sleep(poll_s)
    return None


def champion_of(port: int) -> str | None:
    """The version /v1/models says serves as champion (None while it has none, or answers no list)."""
    described = httpx.get(f"http://{HOST}:{port}/v1/models", timeout=2).json()
    roles = {v["role"]: v["version"] for v in described.get("versions", [])}
    return roles.get("champion")


def judged(result: dict, **checks: bool) -> dict:
    """The scenario's counts plus each named check and the verdict: pass only when every check holds."""
    return {**result, "checks": {k: bool(v) for k, v in checks.items()}, "verdict": "pass" if all(checks.values()) else "fail"}
