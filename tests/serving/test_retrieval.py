"""A catalogue above serving.max_candidates served through ANN retrieval: the bundle's user tower and item index
(a memory-mapped usearch view) find the candidates, the candidate graph scores them, /v1/recommend ranks them with
the seen items removed; the answer is the exact top-k of the whole catalogue. A bundle whose index does not match its
SHA256SUMS is refused. Real torch student, real ONNX graphs, real uvicorn."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch

from freshrec.core.schemas import BUNDLE_CANDIDATE_GRAPH, BUNDLE_ITEM_INDEX
from freshrec.pipeline.training.models import Student
from tests.serving.builders import ann_student, write_retrieval_bundle
from tests.serving.conftest import N_ITEMS, RunningServer

pytestmark = pytest.mark.slow


def _student(seed: int):
    return ann_student(N_ITEMS, seed)


@pytest.fixture
def ann_world(world, monkeypatch):
    from freshrec.core.settings import get_settings

    monkeypatch.setenv("FRESHREC_SERVING__MAX_CANDIDATES", "20")  # 60 items: retrieval
    monkeypatch.setenv("FRESHREC_SERVING__RETRIEVAL_FETCH", "10")
    monkeypatch.setenv("FRESHREC_SERVING__ARTIFACT_VARIANT", "fp32")
    get_settings.cache_clear()
    world.settings = get_settings()
    return world


def _exact_top(student: Student, history: list[int], seen: set[int], k: int) -> list[int]:
    with torch.no_grad():
        logits = student.catalogue_logits(torch.tensor([history]))[0, 1:].numpy()
    order = [int(i) + 1 for i in np.argsort(-logits, kind="stable") if int(i) + 1 not in seen]
    return order[:k]


def test_recommend_ranks_ann_candidates_exactly_without_seen_items(ann_world):
    world = ann_world
    student = _student(3)
    artifacts = write_retrieval_bundle(world.home / "models" / "run-ann", world.items, student)
    view = world.registry.register_candidate(world.home / "models" / "run-ann", artifacts, {"ndcg_at_10": 0.3}, {}, {},
                                             actor="test")
    world.registry.promote(str(view.version), actor="test", reason="retrieval champion")
    index = {item: i + 1 for i, item in enumerate(world.items)}
    with RunningServer(world.settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        models = client.get("/v1/models").json()
        (served,) = models["versions"]
        assert served["retrieval"]["graph"] == BUNDLE_CANDIDATE_GRAPH and served["retrieval"]["fetch"] == 10
        for user_id, items in list(world.users.items())[:12]:
            answer = client.post("/v1/recommend", json={"user_id": user_id, "k": 5}).json()
            got = [index[entry["item_id"]] for entry in answer["items"]]
            history = [index[i] for i in items]
            assert answer["reason"] == "personalised" and len(got) == 5
            assert not set(got) & set(history)  # seen items removed although the index returned some of them
            assert got == _exact_top(student, history, set(history), 5), user_id
            kept = client.post("/v1/recommend", json={"user_id": user_id, "k": 5, "exclude_seen": False}).json()
            assert [index[e["item_id"]] for e in kept["items"]] == _exact_top(student, history, set(), 5)


def test_an_index_changed_after_promotion_is_refused_at_load(ann_world):
    """(Promotion itself refuses a bundle whose files do not match SHA256SUMS; this is the file changed after.)"""
    world = ann_world
    artifacts = write_retrieval_bundle(world.home / "models" / "run-bad", world.items, _student(4))
    view = world.registry.register_candidate(world.home / "models" / "run-bad", artifacts, {"ndcg_at_10": 0.3}, {}, {},
                                             actor="test")
    world.registry.promote(str(view.version), actor="test", reason="champion")
    index_file = world.home / "models" / "run-bad" / BUNDLE_ITEM_INDEX
    raw = bytearray(index_file.read_bytes())
    raw[-1] ^= 0xFF
    index_file.write_bytes(bytes(raw))
    with RunningServer(world.settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        models = client.get("/v1/models").json()
        assert models["versions"] == [] and str(view.version) in json.dumps(models.get("missing"))
        assert client.post("/v1/recommend", json={"user_id": "u1", "k": 5}).status_code == 503
