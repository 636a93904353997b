"""Each peer's configuration on a 2-core box, in one place: the adapters build their servers from it and the
report prints it. No peer package is imported here, so the main venv can read it.

Shared choices: no log line per request (FreshRec writes none); one inference worker (a model call is about a
millisecond of single-threaded ONNX Runtime, and a second inference process would fight the HTTP process and the
load generator for the 2 cores); batches of up to 64 (FreshRec's ``serving.max_batch``); FreshRec's batch window
wherever the framework takes one.
"""

from __future__ import annotations

from typing import Any

MAX_BATCH = 64
BATCH_WINDOW_S = 0.0005  # FreshRec's serving.max_wait_ms default (0.5 ms)
SLO_MS = 10  # the release gate's p99 budget; BentoML's dispatcher takes it as its latency goal

RAY_SERVE: dict[str, Any] = {
    "deployment": "1 replica, ray_actor_options num_cpus=1 (the proxy and controller share the other core)",
    "ray_init": "num_cpus=2, include_dashboard=False",
    "max_ongoing_requests": 2 * MAX_BATCH,  # above max_batch_size so a batch can fill (batching guide)
    "serve.batch": {"max_batch_size": MAX_BATCH, "batch_wait_timeout_s": BATCH_WINDOW_S},
    "http": "Ray Serve's HTTP proxy, route_prefix='/', starlette Request -> orjson Response",
    "logging_config": {"enable_access_log": False, "log_level": "WARNING"},  # no log line per request
}

BENTOML: dict[str, Any] = {
    "services": "front service (route /v1/recommend, JSON fields as parameters) -> bentoml.depends -> ranker "
                "service (the batchable API), the documented way to batch single-item HTTP calls",
    "workers": {"front": 1, "ranker": 1},
    "bentoml.api": {"batchable": True, "max_batch_size": MAX_BATCH, "max_latency_ms": SLO_MS},
    "logging": {"access": {"enabled": False}},  # no log line per request
}

LITSERVE: dict[str, Any] = {
    "LitAPI": {"api_path": "/v1/recommend", "max_batch_size": MAX_BATCH, "batch_timeout": BATCH_WINDOW_S},
    "LitServer": {"accelerator": "cpu", "devices": 1, "workers_per_device": 1, "fast_queue": True,
                  "healthcheck_path": "/readyz"},
    "run": {"num_api_servers": 1, "api_server_worker_type": "process"},
}

KSERVE: dict[str, Any] = {
    "ModelServer": {"workers": 1, "enable_grpc": False, "enable_latency_logging": False},
    "batching": "none in the Python model server (KServe batches in its Kubernetes agent sidecar)",
    "quiet_loggers": ["kserve.trace", "uvicorn.access"],  # KServe logs two lines per request by default
    "route": "/v1/recommend added to kserve.model_server.app, calling the kserve.Model (preprocess/predict/postprocess)",
}
