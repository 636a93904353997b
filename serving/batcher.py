"""Micro-batching: concurrent scoring requests for one model coalesce into one ONNX Runtime call.

An idle batcher starts a drain at once (no added latency). Requests parsed in the same event-loop
turn join the same call; while a call runs, new requests queue and everything queued (up to
``max_batch``) goes in the next call, so under load the batch window is one ORT call. If that batch is
not full, the batcher yields to the event loop for up to ``max_wait_ms`` to let requests already on the
wire join it. The queue is bounded and every job has a deadline: past either, the caller gets
``Overloaded`` (503 + Retry-After).

Scoring runs inline on the event loop (executor None: no thread hop, the right choice for one core per
worker) or on a scoring thread (ORT releases the GIL, so HTTP parsing overlaps scoring).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from freshrec.errors import Overloaded


@dataclass(slots=True)
class ScoreJob:
    history: np.ndarray  # int64 item indices, oldest first
    candidates: np.ndarray | None  # None = the version's shared candidate set
    future: asyncio.Future
    enqueued_at: float


BatchRunner = Callable[[list[ScoreJob]], list[np.ndarray]]
BatchObserver = Callable[[int, float], None]  # (batch size, seconds in ORT)


class MicroBatcher:
    def __init__(
        self,
        run_batch: BatchRunner,
        executor: Executor | None,
        *,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        deadline_ms: float,
        observe: BatchObserver | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000
        self._max_queue = max_queue
        self._deadline_s = deadline_ms / 1000
        self._observe = observe
        self._queue: deque[ScoreJob] = deque()
        self._draining = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def score(self, history: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
        if len(self._queue) >= self._max_queue:
            raise Overloaded(f"scoring queue full ({self._max_queue} waiting)", retry_after_s=1.0)
        loop = asyncio.get_running_loop()
        job = ScoreJob(history, candidates, loop.create_future(), time.perf_counter())
        self._queue.append(job)
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await job.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            first = True
            while self._queue:
                if not first:
                    await self._fill()
                first = False
                batch = self._take()
                if not batch:
                    continue
                started = time.perf_counter()
                try:
                    if self._executor is None:
                        results = self._run_batch(batch)
                    else:
                        results = await loop.run_in_executor(self._executor, self._run_batch, batch)
                except Exception as exc:  # noqa: BLE001 - the callers get the failure, the batcher lives on
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                if self._observe is not None:
                    self._observe(len(batch), time.perf_counter() - started)
                for job, scores in zip(batch, results):
                    if not job.future.done():
                        job.future.set_result(scores)
        finally:
            self._draining = False

    async def _fill(self) -> None:
        """Under load, give requests already arriving a moment (at most max_wait) to join this batch."""
        if self._max_wait_s <= 0:
            return
        oldest = self._queue[0].enqueued_at
        while len(self._queue) < self._max_batch and time.perf_counter() - oldest < self._max_wait_s:
            before = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == before:
                return

    def _take(self) -> list[ScoreJob]:
        now = time.perf_counter()
        batch: list[ScoreJob] = []
        while self._queue and len(batch) < self._max_batch:
            job = self._queue.popleft()
            if job.future.done():  # the caller went away (client disconnect, cancelled task)
                continue
            if now - job.enqueued_at > self._deadline_s:
                job.future.set_exception(Overloaded("request waited past its deadline", retry_after_s=1.0))
                continue
            batch.append(job)
        return batch
