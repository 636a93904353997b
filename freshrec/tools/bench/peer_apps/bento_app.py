"""BentoML: a front service answering ``/v1/recommend`` that calls a ranker service's batchable API.

BentoML batches across calls of a ``batchable`` API whose HTTP body is itself a list; a single-object contract
(FreshRec's) therefore goes through a front service and ``bentoml.depends``, the composition BentoML's adaptive
batching guide shows. Configuration: :data:`freshrec.tools.bench.peer_apps.configs.BENTOML`. Run:
``bentoml serve freshrec.tools.bench.peer_apps.bento_app:Recommend --host 127.0.0.1 --port N``.
"""

from __future__ import annotations

import bentoml

from freshrec.serving.contract import RecommendRequest
from freshrec.tools.bench.peer_apps.configs import BENTOML, MAX_BATCH, SLO_MS
from freshrec.tools.bench.peer_apps.recommender import from_environment


@bentoml.service(workers=BENTOML["workers"]["ranker"], logging=BENTOML["logging"])
class Ranker:
    def __init__(self) -> None:
        self.recommender = from_environment()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=SLO_MS)
    def rank(self, requests: list[dict]) -> list[dict]:
        return self.recommender.recommend([RecommendRequest.model_validate(r) for r in requests])


@bentoml.service(workers=BENTOML["workers"]["front"], logging=BENTOML["logging"])
class Recommend:
    ranker = bentoml.depends(Ranker)

    @bentoml.api(route="/v1/recommend")
    async def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True) -> dict:
        request = {"user_id": user_id, "k": k, "exclude_seen": exclude_seen}
        return (await self.ranker.to_async.rank([request]))[0]
