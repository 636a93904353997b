"""Ray Serve: one replica whose ``@serve.batch`` method scores the requests that arrive together.

Configuration: :data:`freshrec.tools.bench.peer_apps.configs.RAY_SERVE` (from Ray Serve's batching guide and
performance-tuning page). Run: ``python -m freshrec.tools.bench.peer_apps.ray_app --port N``.
"""

from __future__ import annotations

import argparse
import signal

import orjson
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from freshrec.serving.contract import RecommendRequest
from freshrec.tools.bench.peer_apps.configs import BATCH_WINDOW_S, MAX_BATCH, RAY_SERVE
from freshrec.tools.bench.peer_apps.recommender import from_environment

READY = b'{"ready":true}'


class Recommend:
    def __init__(self) -> None:
        self.recommender = from_environment()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WINDOW_S)
    async def recommend(self, requests: list[RecommendRequest]) -> list[dict]:
        return self.recommender.recommend(requests)

    async def __call__(self, request: Request) -> Response:
        if request.url.path == "/readyz":
            return Response(READY, media_type="application/json")
        body = RecommendRequest.model_validate_json(await request.body())
        return Response(orjson.dumps(await self.recommend(body)), media_type="application/json")


RecommendDeployment = serve.deployment(num_replicas=1, max_ongoing_requests=RAY_SERVE["max_ongoing_requests"],
                                       ray_actor_options={"num_cpus": 1})(Recommend)


def _exit_on_term(*_: object) -> None:
    raise SystemExit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _exit_on_term)  # the bench stops servers with SIGTERM: shut Ray down cleanly
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(RecommendDeployment.bind(), route_prefix="/", logging_config=RAY_SERVE["logging_config"])
        while True:
            signal.pause()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
