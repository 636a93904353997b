"""Micro-batching: concurrent requests share ORT calls; a lone request runs alone, without waiting."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.conftest import RunningServer, World


def _batch_stats(url: str, version: str) -> tuple[float, float]:
    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name in ("freshrec_batch_size_sum", "freshrec_batch_size_count") and sample.labels["version"] == version:
                values[sample.name] = sample.value
    return values.get("freshrec_batch_size_sum", 0.0), values.get("freshrec_batch_size_count", 0.0)


@pytest.mark.parametrize("scoring_thread", [False, True], ids=["inline", "thread"])
def test_concurrent_requests_coalesce(world: World, champion: str, scoring_thread: bool) -> None:
    settings = world.settings.model_copy(
        update={"serving": world.settings.serving.model_copy(update={"scoring_thread": scoring_thread})}
    )
    with RunningServer(settings) as server:
        base_sum, base_count = _batch_stats(server.url, champion)  # warm-up does not go through the batcher
        with httpx.Client(base_url=server.url) as client:
            for n in range(10):
                assert client.post("/v1/recommend", json={"user_id": f"u{n}", "k": 5}).status_code == 200
        idle_sum, idle_count = _batch_stats(server.url, champion)
        assert (idle_sum - base_sum, idle_count - base_count) == (10, 10)  # one request, one call, no waiting

        async def burst() -> list[int]:
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
                statuses = []
                for _ in range(5):
                    responses = await asyncio.gather(
                        *(client.post("/v1/recommend", json={"user_id": f"u{n}", "k": 5}) for n in range(32))
                    )
                    statuses += [r.status_code for r in responses]
                return statuses

        assert set(asyncio.run(burst())) == {200}
        total, calls = _batch_stats(server.url, champion)
        assert total - idle_sum == 160
        assert calls - idle_count < 160, "concurrent requests never shared an ORT call"
