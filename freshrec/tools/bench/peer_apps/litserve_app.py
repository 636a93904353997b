"""LitServe: a batching ``LitAPI`` on ``/v1/recommend``; decode, predict and encode run in the inference worker.

Configuration: :data:`freshrec.tools.bench.peer_apps.configs.LITSERVE` (LitServe's batching page and the
LitServer reference: one API server, one CPU worker, ZeroMQ queue). Run:
``python -m freshrec.tools.bench.peer_apps.litserve_app --port N``.
"""

from __future__ import annotations

import argparse

import litserve as ls

from freshrec.serving.contract import RecommendRequest
from freshrec.tools.bench.peer_apps.configs import LITSERVE
from freshrec.tools.bench.peer_apps.recommender import Recommender, from_environment


class RecommendAPI(ls.LitAPI):
    recommender: Recommender

    def setup(self, device: str) -> None:
        self.recommender = from_environment()

    def decode_request(self, request: dict, **kwargs: object) -> RecommendRequest:
        return RecommendRequest.model_validate(request)

    def batch(self, inputs: list[RecommendRequest]) -> list[RecommendRequest]:
        return inputs

    def predict(self, x: list[RecommendRequest], **kwargs: object) -> list[dict]:
        return self.recommender.recommend(x)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict, **kwargs: object) -> dict:
        return output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ls.LitServer(RecommendAPI(**LITSERVE["LitAPI"]), **LITSERVE["LitServer"])
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False, **LITSERVE["run"])


if __name__ == "__main__":
    main()
