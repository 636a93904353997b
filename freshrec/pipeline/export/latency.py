"""Single-request latency of an ONNX graph or a torch model (one thread, batch 1, warm)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from freshrec.pipeline.export.onnx_export import run_scores, session


def time_calls(call: Callable[[], object], min_calls: int = 30, min_seconds: float = 0.3, warmup: int = 5) -> dict:
    """p50 / p99 / mean latency in ms over at least ``min_calls`` calls and ``min_seconds``, and the p50 of
    the calling thread's CPU time per call (``cpu_p50_ms``).

    With one intra-op thread ORT and torch compute on the calling thread, so its CPU time is what a call
    costs even when the neighbours on a shared machine take the core away now and then (wall time counts
    those pauses too). Compare variants on ``cpu_p50_ms`` on a busy box, on ``p50_ms`` on a quiet one."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    cpu: list[float] = []
    started = time.perf_counter()
    while len(samples) < min_calls or time.perf_counter() - started < min_seconds:
        c0, t0 = time.thread_time_ns(), time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time_ns() - c0) / 1e6)
        if len(samples) >= 20_000:
            break
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(0.99 * len(samples)))],
        "mean_ms": statistics.fmean(samples),
        "cpu_p50_ms": statistics.median(cpu),
        "calls": len(samples),
    }


def request_inputs(n_items: int, history_len: int, n_candidates: int, batch: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    history = rng.integers(1, n_items + 1, size=(batch, history_len), dtype=np.int64)
    candidates = rng.integers(1, n_items + 1, size=(batch, n_candidates), dtype=np.int64)
    return history, candidates


def onnx_latency(path, n_items: int, history_len: int, n_candidates: int, batch: int = 1, **kwargs) -> dict:
    sess = session(path, threads=1)
    history, candidates = request_inputs(n_items, history_len, n_candidates, batch)
    return time_calls(lambda: run_scores(sess, history, candidates), **kwargs)


def interleaved_onnx_latency(paths: list, n_items: int, history_len: int, n_candidates: int, rounds: int = 3,
                             **kwargs) -> list[dict]:
    """``onnx_latency`` of each graph, measured in ``rounds`` alternating passes; per graph the round with the
    median ``cpu_p50_ms``. Graphs measured one after the other on a shared box meet different neighbours
    (a recipe timed while another engineer's job ran looked 1.5x slower); alternating gives each the same."""
    samples: list[list[dict]] = [[] for _ in paths]
    for _ in range(rounds):
        for path, taken in zip(paths, samples, strict=True):
            taken.append(onnx_latency(path, n_items, history_len, n_candidates, **kwargs))
    return [sorted(taken, key=lambda t: t["cpu_p50_ms"])[len(taken) // 2] | {"rounds": rounds} for taken in samples]


def torch_latency(model, n_items: int, history_len: int, n_candidates: int, batch: int = 1, **kwargs) -> dict:
    import torch

    history, candidates = (torch.from_numpy(a) for a in request_inputs(n_items, history_len, n_candidates, batch))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            return time_calls(lambda: model(history, candidates), **kwargs)
    finally:
        torch.set_num_threads(previous)
