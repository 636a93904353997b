"""``freshrec serve``: the serving tier on uvicorn (uvloop + httptools), one or several workers."""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer

from freshrec.core.layout import Layout
from freshrec.core.settings import get_settings


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: settings.serving.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: settings.serving.port)")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="uvicorn worker processes (default: settings.serving.workers)")] = None,
) -> None:
    """Serve recommendations from the registry's champion/canary (OpenAPI at /docs)."""
    import uvicorn

    settings = get_settings()
    host = host or settings.serving.host
    port = port or settings.serving.port
    workers = workers or settings.serving.workers or min(os.cpu_count() or 1, 8)
    if workers > 1:
        run = Layout(settings.home).run
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Each worker writes its metrics to files here; /metrics in any worker aggregates them all.
            metrics_dir = run / f"prometheus-{port}"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        # Each worker records the registry generation it serves; /v1/models reports the lowest (siblings.py).
        workers_dir = run / f"serving-workers-{port}"
        shutil.rmtree(workers_dir, ignore_errors=True)
        os.environ["FRESHREC_SERVING_WORKERS_DIR"] = str(workers_dir)
    uvicorn.run(
        "freshrec.serving.api:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
