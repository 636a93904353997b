"""Micro-batching: concurrent scoring requests for one model coalesce into one ONNX Runtime call.

An idle batcher starts a drain at once (no added latency). Scoring runs either

- inline on the event loop (executor None: no thread hop, the right choice with one core per worker):
  the drain is a plain callback queued behind the request tasks of the current loop turn, so every
  request parsed in that turn joins the same ORT call; or
- on a scoring thread (ORT releases the GIL, so HTTP parsing overlaps scoring): while a call runs, new
  requests queue and everything queued (up to ``max_batch``) goes in the next call, so under load the
  batch window is one ORT call; a batch that is not full yields to the loop for up to ``max_wait_ms``
  to let requests already on the wire join it.

The queue is bounded and every job has a deadline: past either, the caller gets ``Overloaded``
(503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from freshrec.core.errors import Overloaded


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
            if self._executor is None:
                # A plain callback, queued behind the request tasks of this loop turn: they join the batch.
                loop.call_soon(self._drain_inline)
            else:
                loop.create_task(self._drain_threaded())
        return await job.future

    def _drain_inline(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    self._settle(batch, self._run_timed, batch)
        finally:
            self._draining = False

    async def _drain_threaded(self) -> None:
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
                future = loop.run_in_executor(self._executor, self._run_timed, batch)
                try:
                    await future
                except Exception:  # noqa: BLE001 - settled below from the future's exception
                    pass
                self._settle(batch, future.result)
        finally:
            self._draining = False

    def _run_timed(self, batch: list[ScoreJob]) -> list[np.ndarray]:
        started = time.perf_counter()
        results = self._run_batch(batch)
        if self._observe is not None:
            self._observe(len(batch), time.perf_counter() - started)
        return results

    @staticmethod
    def _settle(batch: list[ScoreJob], produce: Callable, *args) -> None:
        """Hand each caller its row, or the failure: the batcher itself lives on."""
        try:
            results = produce(*args)
        except Exception as exc:  # noqa: BLE001
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for job, scores in zip(batch, results):
            if not job.future.done():
                job.future.set_result(scores)

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
