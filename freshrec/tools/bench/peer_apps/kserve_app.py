"""KServe's Python model server: a ``kserve.Model`` whose ``__call__`` (preprocess -> predict -> postprocess, with
KServe's latency histograms) answers ``/v1/recommend``, a route added to the FastAPI app ``ModelServer`` serves.

KServe's own routes speak the V1/V2 inference protocols; FreshRec's contract needs a route of its own, added the
way KServe's custom-predictor guide customises that app. The Python server does not batch (KServe batches in its
Kubernetes agent sidecar), so every request is an ONNX call of its own. Configuration:
:data:`freshrec.tools.bench.peer_apps.configs.KSERVE`. Run: ``python -m freshrec.tools.bench.peer_apps.kserve_app --port N``.
"""

from __future__ import annotations

import argparse
import logging

import kserve
import orjson
from kserve.model_server import app
from starlette.requests import Request
from starlette.responses import Response

from freshrec.serving.contract import RecommendRequest
from freshrec.tools.bench.peer_apps.configs import KSERVE
from freshrec.tools.bench.peer_apps.recommender import Recommender, from_environment

JSON = "application/json"


class RecommendModel(kserve.Model):
    recommender: Recommender

    def __init__(self) -> None:
        super().__init__("recommend")
        self.load()

    def load(self) -> bool:
        self.recommender = from_environment()
        self.ready = True
        return self.ready

    def predict(self, payload: RecommendRequest, headers: dict[str, str] | None = None) -> dict:
        return self.recommender.recommend([payload])[0]


def add_routes(model: RecommendModel) -> None:
    async def recommend(request: Request) -> Response:
        body = RecommendRequest.model_validate_json(await request.body())
        response, _ = await model(body)
        return Response(orjson.dumps(response), media_type=JSON)

    async def readyz(_: Request) -> Response:
        return Response(b'{"ready":true}' if model.ready else b'{"ready":false}', status_code=200 if model.ready else 503,
                        media_type=JSON)

    app.add_api_route("/v1/recommend", recommend, methods=["POST"])
    app.add_api_route("/readyz", readyz, methods=["GET"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    model = RecommendModel()
    add_routes(model)
    server = kserve.ModelServer(http_port=args.port, **KSERVE["ModelServer"])
    for name in KSERVE["quiet_loggers"]:  # no log line per request, like the other servers
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
