"""Open-loop traffic from synthetic users, with clicks drawn from the ground truth.

Requests start on a fixed schedule (constant arrival rate) whatever the server's answer time, so
queueing shows up as latency instead of being hidden by a closed loop. Each recommendation is shown to
a user who scans it top-down and clicks the first item they like (a cascade: P(click item i) is the
truth's click probability), so an impression has at most one click and CTR is a proportion. Clicks go
to POST /v1/feedback with the variant and version that served them; the serving tier lands them in the
raw lake. Bounded: a fixed number of requests, and at most `max_in_flight` outstanding; an arrival that
finds the limit reached is counted as shed, not queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np

from freshrec.core.errors import InvalidInput


class GroundTruth(Protocol):
    def click_probability(self, user_id: object, item_id: object, day: dt.date | int) -> Any: ...

    def sample_users(self, n: int, day: dt.date | int, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True)
class SimulationConfig:
    url: str
    rate: float             # requests per second
    duration_s: float
    day: dt.date | int
    k: int = 10
    seed: int = 0
    max_in_flight: int = 256
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration_s <= 0:
            raise InvalidInput("rate and duration must be positive")
        if self.rate * self.duration_s > 10_000_000:
            raise InvalidInput("more than 10 million requests: lower the rate or the duration")


@dataclass
class VariantStats:
    requests: int = 0
    clicks: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else None
        return {
            "requests": self.requests,
            "clicks": self.clicks,
            "ctr": self.clicks / self.requests if self.requests else None,
            "p50_ms": float(np.percentile(lat, 50)) if lat is not None else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat is not None else None,
        }


@dataclass
class SimulationReport:
    planned: int
    sent: int = 0
    shed: int = 0
    failed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    feedback_failed: int = 0
    variants: dict[str, VariantStats] = field(default_factory=lambda: defaultdict(VariantStats))
    versions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned, "sent": self.sent, "shed": self.shed, "failed": dict(self.failed),
            "feedback_failed": self.feedback_failed, "elapsed_s": self.elapsed_s,
            "achieved_rate": self.sent / self.elapsed_s if self.elapsed_s else None,
            "variants": {v: {**s.summary(), "versions": sorted(self.versions[v])} for v, s in self.variants.items()},
        }

    def status_line(self, elapsed_s: float) -> str:
        """One line for a log: pace, click-through rate so far (overall and per variant), errors."""
        answered = sum(s.requests for s in self.variants.values())
        clicks = sum(s.clicks for s in self.variants.values())
        rate = self.sent / elapsed_s if elapsed_s > 0 else 0.0
        ctr = f"{clicks / answered:.4f}" if answered else "-"
        arms = ", ".join(f"{v} {s.clicks / s.requests:.4f} of {s.requests}"
                         for v, s in sorted(self.variants.items()) if s.requests)
        errors = sum(self.failed.values())
        detail = ", ".join(f"{k} x{n}" for k, n in sorted(self.failed.items()))
        return (f"{elapsed_s:.0f} s: {rate:.1f} req/s, {answered} answered, CTR {ctr}" + (f" ({arms})" if arms else "")
                + f", errors {errors}" + (f" ({detail})" if detail else "") + f", shed {self.shed}"
                + (f", feedback failed {self.feedback_failed}" if self.feedback_failed else ""))


def first_click(probabilities: np.ndarray, uniforms: np.ndarray) -> int | None:
    """Cascade model: index of the first item clicked, scanning top-down, or None."""
    hits = np.flatnonzero(uniforms < probabilities)
    return int(hits[0]) if hits.size else None


class Simulator:
    """``progress(report, elapsed_s)`` is called every ``progress_every_s`` while traffic runs."""

    def __init__(self, truth: GroundTruth, config: SimulationConfig, *,
                 progress: Callable[[SimulationReport, float], None] | None = None, progress_every_s: float = 10.0) -> None:
        self.truth, self.config, self.progress, self.progress_every_s = truth, config, progress, progress_every_s
        self.rng = np.random.default_rng(config.seed)
        self.report = SimulationReport(planned=int(round(config.rate * config.duration_s)))

    async def _one(self, http: httpx.AsyncClient, user_id: str, uniforms: np.ndarray) -> None:
        cfg, report = self.config, self.report
        started = time.perf_counter()
        try:
            response = await http.post(f"{cfg.url}/v1/recommend", json={"user_id": user_id, "k": cfg.k})
        except httpx.HTTPError as exc:
            report.failed[type(exc).__name__] += 1
            return
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            report.failed[str(response.status_code)] += 1
            return
        body = response.json()
        variant, version = body.get("variant", "unknown"), str(body.get("model_version", ""))
        stats = report.variants[variant]
        stats.requests += 1
        stats.latencies_ms.append(latency_ms)
        report.versions[variant].add(version)
        items = [it["item_id"] for it in body.get("items", [])]
        if not items:
            return
        try:
            probabilities = np.atleast_1d(self.truth.click_probability(user_id, items, cfg.day))
        except InvalidInput:
            return  # an item the ground truth does not know (not synthetic): no click model for it
        clicked = first_click(probabilities, uniforms[: len(items)])
        if clicked is None:
            return
        stats.clicks += 1
        feedback = {"user_id": user_id, "item_id": items[clicked], "event_type": "click",
                    "variant": variant if variant in ("champion", "canary") else None, "model_version": version}
        try:
            (await http.post(f"{cfg.url}/v1/feedback", json=feedback)).raise_for_status()
        except httpx.HTTPError:
            report.feedback_failed += 1

    async def _report_progress(self, progress: Callable[[SimulationReport, float], None], start: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.progress_every_s)
            progress(self.report, loop.time() - start)

    async def run(self) -> SimulationReport:
        cfg, report = self.config, self.report
        users = self.truth.sample_users(report.planned, cfg.day, self.rng)
        uniforms = self.rng.random((report.planned, cfg.k))
        limits = httpx.Limits(max_connections=cfg.max_in_flight, max_keepalive_connections=cfg.max_in_flight)
        in_flight: set[asyncio.Task] = set()
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(timeout=cfg.timeout_s, limits=limits) as http:
            start = loop.time()
            reporter = loop.create_task(self._report_progress(self.progress, start)) if self.progress else None
            for i in range(report.planned):
                delay = start + i / cfg.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(in_flight) >= cfg.max_in_flight:
                    report.shed += 1
                    continue
                task = loop.create_task(self._one(http, str(users[i]), uniforms[i]))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                report.sent += 1
            if in_flight:
                await asyncio.wait(in_flight, timeout=cfg.timeout_s * 2)
            report.elapsed_s = loop.time() - start
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
        return report
