"""Hot swap: new versions and snapshots go live under load without a failed request; a corrupted
artifact never takes traffic; ``previous`` stays loaded for an instant rollback."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from freshrec.core.errors import Conflict
from freshrec.core.layout import Layout
from tests.serving.builders import served_variant, write_snapshot
from tests.serving.conftest import World, admin_headers


async def _hammer(url: str, stop: asyncio.Event, concurrency: int = 8) -> Counter:
    outcomes: Counter = Counter()

    async def worker(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            i = 0
            while not stop.is_set():
                i += 1
                r = await client.post("/v1/recommend", json={"user_id": f"u{(n * 7 + i) % 40}", "k": 5})
                outcomes[(r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text)] += 1

    tasks = [asyncio.create_task(worker(n)) for n in range(concurrency)]
    await stop.wait()
    await asyncio.gather(*tasks)
    return outcomes


def _under_load(url: str, action) -> Counter:
    async def main() -> Counter:
        stop = asyncio.Event()
        load = asyncio.create_task(_hammer(url, stop))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(action)
        await asyncio.sleep(0.5)
        stop.set()
        return await load

    return asyncio.run(main())


def test_promotion_under_load_drops_nothing(server, world: World, champion: str) -> None:
    new = world.register("run-2", seed=2)

    def promote_and_wait() -> None:
        world.registry.promote(new, actor="test", reason="hot swap")
        deadline = time.monotonic() + 30  # the poller (0.2 s here) picks the change up
        while httpx.get(f"{server.url}/readyz").json()["champion"] != new:
            assert time.monotonic() < deadline, "new champion never went live"
            time.sleep(0.05)

    outcomes = _under_load(server.url, promote_and_wait)
    statuses = {status for status, _ in outcomes}
    versions = {version for _, version in outcomes}
    assert statuses == {200}, outcomes
    assert versions == {champion, new}
    roles = {v["role"]: v["version"] for v in httpx.get(f"{server.url}/v1/models").json()["versions"]}
    assert roles == {"champion": new, "previous": champion}

    # previous is already loaded: the rollback is a table swap, answered right away
    before = httpx.get(f"{server.url}/metrics").text.count("freshrec_model_load_failures_total{")
    r = httpx.post(f"{server.url}/admin/rollback", headers=admin_headers())
    assert r.status_code == 200
    assert {v["role"]: v["version"] for v in r.json()["versions"]} == {"champion": champion}
    assert httpx.post(f"{server.url}/v1/recommend", json={"user_id": "u1"}).json()["model_version"] == champion
    assert httpx.get(f"{server.url}/metrics").text.count("freshrec_model_load_failures_total{") == before


def test_corrupted_artifact_is_refused_while_the_old_version_serves(server, world: World, champion: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bad = world.register("run-2", seed=2)
    artifact = world.home / "models" / "run-2" / f"student.{served_variant()[0]}.onnx"
    original = artifact.read_bytes()
    artifact.write_bytes(original[:-16] + b"corrupted-bytes!")
    with pytest.raises(Conflict, match="cannot promote"):  # the registry checks every file first
        world.registry.promote(bad, actor="test", reason="bad artifact")
    # A file damaged after its promotion (on shared storage, say) reaches serving all the same: it must
    # refuse it at load. That is the case below: the registry's check passes as it did at promotion time.
    monkeypatch.setattr(type(world.registry), "_verify_before_serving", lambda *_: None)

    def promote_and_reconcile() -> None:
        world.registry.promote(bad, actor="test", reason="bad artifact")
        r = httpx.post(f"{server.url}/admin/reconcile", headers=admin_headers())
        assert r.status_code == 200
        refused = r.json()["refused"]
        assert [f["version"] for f in refused] == [bad] and "sha256" in refused[0]["reason"]
        assert r.json()["missing"] == [bad]

    outcomes = _under_load(server.url, promote_and_reconcile)
    assert {status for status, _ in outcomes} == {200}
    assert {version for _, version in outcomes} == {champion}
    assert httpx.get(f"{server.url}/readyz").json()["champion"] == champion
    failures = _sample(httpx.get(f"{server.url}/metrics").text, "freshrec_model_load_failures_total", version=bad)
    assert failures >= 1  # refused by the poller and/or the admin reconcile, never loaded

    # once the artifact is repaired, an admin reconcile retries it at once
    artifact.write_bytes(original)
    r = httpx.post(f"{server.url}/admin/reconcile", headers=admin_headers())
    assert {v["role"]: v["version"] for v in r.json()["versions"]}["champion"] == bad and r.json()["refused"] == []
    assert r.json()["missing"] == []


def _sample(exposition: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_snapshot_hot_swap(server, world: World) -> None:
    newcomer_history = world.items[10:20]
    cold = httpx.post(f"{server.url}/v1/recommend", json={"user_id": "newcomer", "k": 5}).json()
    assert [i["item_id"] for i in cold["items"]] == world.items[:5]  # cold start: popularity
    users = {**world.users, "newcomer": newcomer_history}
    write_snapshot(Layout(world.settings.home).online, "snap-2", users, {item: 1.0 for item in world.items})
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/v1/models").json()["snapshot"] != "snap-2":
        assert time.monotonic() < deadline, "snapshot never swapped"
        time.sleep(0.05)
    warm = httpx.post(f"{server.url}/v1/recommend", json={"user_id": "newcomer", "k": 5}).json()
    ids = [i["item_id"] for i in warm["items"]]
    assert ids != world.items[:5] and not set(ids) & set(newcomer_history)


def test_unreadable_snapshot_keeps_the_old_one(server, world: World) -> None:
    online = Layout(world.settings.home).online
    (online / "broken").mkdir()
    (online / "broken" / "users.parquet").write_bytes(b"not parquet")
    (online / "broken" / "items.parquet").write_bytes(b"not parquet")
    (online / "CURRENT").write_text("broken")
    r = httpx.post(f"{server.url}/admin/reconcile", headers=admin_headers())
    assert r.status_code == 200 and r.json()["snapshot"] == "snap-1"
    assert httpx.post(f"{server.url}/v1/recommend", json={"user_id": "u1", "k": 3}).status_code == 200


def test_a_start_with_a_broken_champion_serves_previous(world: World, champion: str) -> None:
    from tests.serving.conftest import RunningServer

    newer = world.register("run-2", seed=2)
    world.registry.promote(newer, actor="test", reason="newer")  # champion -> previous
    artifact = world.home / "models" / "run-2" / f"student.{served_variant()[0]}.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-16] + b"corrupted-bytes!")  # damaged after its promotion
    with RunningServer(world.settings) as server:  # a restart: nothing loaded yet
        r = httpx.post(f"{server.url}/v1/recommend", json={"user_id": "u1", "k": 3})
        assert r.status_code == 200 and r.json()["model_version"] == champion, r.text
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        described = httpx.post(f"{server.url}/admin/reconcile", headers=admin_headers()).json()
        assert described["missing"] == [newer] and [f["version"] for f in described["refused"]] == [newer]


def test_an_edited_vocabulary_is_refused_at_load(server, world: World, champion: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from freshrec.core.registry import sha256_file
    from freshrec.core.schemas import BUNDLE_VOCAB, SHA256SUMS

    newer = world.register("run-2", seed=2)
    bundle = world.home / "models" / "run-2"
    (bundle / SHA256SUMS).write_text("".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(bundle.iterdir())
                                             if p.is_file() and p.name != SHA256SUMS))
    vocab = bundle / BUNDLE_VOCAB
    vocab.write_text(vocab.read_text().replace('"i1"', '"i2x"'))  # every score would land on the wrong item
    with pytest.raises(Conflict, match=BUNDLE_VOCAB):
        world.registry.promote(newer, actor="test", reason="edited vocabulary")
    monkeypatch.setattr(type(world.registry), "_verify_before_serving", lambda *_: None)  # edited after promotion
    world.registry.promote(newer, actor="test", reason="edited vocabulary")
    described = httpx.post(f"{server.url}/admin/reconcile", headers=admin_headers()).json()
    assert [f["version"] for f in described["refused"]] == [newer] and "vocabulary" in described["refused"][0]["reason"]
    assert httpx.post(f"{server.url}/v1/recommend", json={"user_id": "u1", "k": 3}).json()["model_version"] == champion
    # /v1/models is open: it says what was refused and why, without the host's paths
    public = httpx.get(f"{server.url}/v1/models").json()["refused"]
    assert [f["version"] for f in public] == [newer] and str(world.home) not in public[0]["reason"]
    assert ".../run-2/vocab.json" in public[0]["reason"] and str(world.home) in described["refused"][0]["reason"]
