"""The serving benchmark end to end at toy scale: real servers, real load, JSON + PNG."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from freshrec.tools.bench.loadgen import closed_loop, encode_posts, open_loop
from tests.serving.conftest import World


def _requests(world: World) -> list[bytes]:
    bodies = [json.dumps({"user_id": u, "k": 5}).encode() for u in world.users]
    return encode_posts("127.0.0.1", "/v1/recommend", bodies)


def test_open_loop_sends_at_the_offered_rate(server, world: World) -> None:
    result = asyncio.run(open_loop("127.0.0.1", server.port, _requests(world), rate=200, duration_s=1.0, connections=8))
    summary = result.summary()
    assert summary["requests"] == 200 and summary["statuses"] == {"200": 200} and summary["unfinished"] == 0
    assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def test_closed_loop_single_stream(server, world: World) -> None:
    summary = asyncio.run(closed_loop("127.0.0.1", server.port, _requests(world), 1, 0.5)).summary()
    assert summary["requests"] > 10 and summary["non_2xx"] == 0


def test_answers_are_told_apart_by_status_and_retry_after() -> None:
    """Every other answer is a 503 with Retry-After (sent in two pieces); the result says which was which."""
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
               b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nContent-Length: 2\r\n\r\n{}"]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for n in itertools.count():
            try:
                await reader.readuntil(b"\r\n\r\n{}")
            except asyncio.IncompleteReadError:  # the generator closed its connection
                writer.close()
                return
            writer.write(answers[n % 2][:20])
            await writer.drain()
            writer.write(answers[n % 2][20:])

    async def scenario() -> tuple:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        requests = encode_posts("127.0.0.1", "/x", [b"{}"])
        async with server:
            return (await open_loop("127.0.0.1", port, requests, rate=100, duration_s=0.4, connections=1),
                    await closed_loop("127.0.0.1", port, requests, 1, 0.1))

    opened, closed = asyncio.run(scenario())
    for result in (opened, closed):
        assert result.statuses[200] > 0 and result.statuses[503] > 0 and not result.unfinished
        assert result.retry_after == {200: 0, 503: result.statuses[503]}
        assert result.latencies_of(503).size == result.statuses[503]
        assert result.latencies_of(200).size + result.latencies_of(503).size == result.latencies_ms.size


@pytest.mark.slow
def test_bench_serving_report(world: World, champion: str) -> None:
    from freshrec.pipeline.training.checkpoint import save_checkpoint
    from freshrec.pipeline.training.models import Teacher, TeacherConfig
    from freshrec.tools.bench.serving import run

    # The torch baseline serves the bundle's teacher checkpoint (a small one here).
    save_checkpoint(Teacher(TeacherConfig(len(world.items), dim=16, hidden=32)), world.home / "models" / "run-1" / "teacher.safetensors")
    report_path = run(world.settings, rates=[50, 100], duration_s=1.0,
                      servers=["torch-eager teacher", "ort int8 student"], connections=8)
    report = json.loads(report_path.read_text())
    assert report_path.with_suffix(".png").stat().st_size > 10_000
    assert set(report["servers"]) == {"torch-eager teacher", "ort int8 student"}
    for result in report["servers"].values():
        assert result["single_stream"]["requests"] > 0 and result["single_stream"]["non_2xx"] == 0
        assert result["closed_loop"]["achieved_rate"] > 0
        assert [r["offered_rate"] for r in result["open_loop"]][0] == 50
    assert "ort int8 student" in report["speedup_vs_torch_eager"]
    cpu_rows = [r for r in report["scoring_without_http"] if r["provider"] == "CPUExecutionProvider"]
    assert {(r["variant"], r["batch"]) for r in cpu_rows} == {(v, b) for v in ("int8", "fp32") for b in (1, 8, 64, 256)}
    assert all(r["items_scored_per_s"] > 0 for r in cpu_rows)


@pytest.mark.slow
def test_bench_versions_serves_both_versions_side_by_side(world: World, champion: str) -> None:
    from freshrec.core.errors import InvalidInput
    from freshrec.pipeline.training.checkpoint import save_checkpoint
    from freshrec.pipeline.training.models import Student, StudentConfig
    from freshrec.tools.bench.versions import run

    other = world.register("run-2", seed=2)
    save_checkpoint(Student(StudentConfig(len(world.items), dim=8, hidden=16, neighbours=4)),
                    world.home / "models" / "run-2" / "student.safetensors")
    with pytest.raises(InvalidInput):
        run(world.settings, champion, champion)
    report_path = run(world.settings, champion, other, rates=[50, 100], duration_s=1.0, single_stream_s=1.0,
                      connections=8, rounds=2, cpu_rate=50, cpu_rounds=2)
    report = json.loads(report_path.read_text())
    assert report_path.with_suffix(".png").stat().st_size > 10_000
    assert {role: entry["version"] for role, entry in report["versions"].items()} == {"base": champion, "candidate": other}
    for entry in report["versions"].values():
        assert entry["single_stream"]["requests"] > 10 and entry["single_stream"]["non_2xx"] == 0
        assert [[r["offered_rate"] for r in sweep] for sweep in entry["open_loop_rounds"]] == [[50, 100]] * 2
        assert entry["sustained_rate_within_slo"] <= entry["max_rate_within_slo"] <= 100
        assert len(entry["cpu_us_per_request"]) == 2 and all(us > 0 for us in entry["cpu_us_per_request"])
    medians = [report["versions"][r]["cpu_us_per_request_median"] for r in ("base", "candidate")]
    assert report["capacity_ratio_from_cpu"] == pytest.approx(medians[0] / medians[1], abs=1e-3)
    assert report["versions"]["candidate"]["student"]["neighbours"] == 4
    assert report["versions"]["base"]["student"] == {"checkpoint": None}
    p50 = [report["versions"][r]["single_stream"]["p50_ms"] for r in ("base", "candidate")]
    assert report["targets"]["single_stream_p50_delta_ms"]["value"] == pytest.approx(p50[1] - p50[0], abs=1e-3)
    assert not list((world.home).glob("bench-versions-*")), "the scratch homes are removed"


def test_a_rate_counts_as_held_only_when_every_round_held_it() -> None:
    from freshrec.tools.bench.versions import _rates_held

    def point(rate: int, p99: float, errors: int = 0) -> dict:
        return {"offered_rate": rate, "p99_ms": p99, "non_2xx": errors, "unfinished": 0}

    rounds = [[point(1, 2.0), point(2, 12.0), point(3, 5.0), point(4, 6.0)],
              [point(1, 3.0), point(2, 4.0), point(3, 9.0), point(4, 5.0, errors=1)]]
    # rate 2 missed the SLO in round 1, rate 4 answered an error in round 2
    assert _rates_held(rounds, [1, 2, 3, 4], slo_ms=10.0) == {"max": 3, "sustained": 1}
    # a round that stopped before a rate (saturated) did not hold it
    assert _rates_held([rounds[0][:1], rounds[1]], [1, 2], slo_ms=10.0) == {"max": 1, "sustained": 1}
    assert _rates_held([[point(1, 11.0)]], [1], slo_ms=10.0) == {"max": 0, "sustained": 0}
