"""``freshrec events``: the ingestion log (``POST /v1/events``) and its landing into the raw lake."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from freshrec.core.settings import get_settings

app = typer.Typer(no_args_is_help=True)
out = Console()


@app.command("land")
def land(
    continuous: Annotated[bool, typer.Option(
        "--continuous", help="keep landing every --trigger-interval until stopped (the production mode); by default "
        "land what is sealed now and stop")] = False,
    trigger_interval: Annotated[str, typer.Option(help="micro-batch interval of --continuous, e.g. 10s, 500ms, 2m")] = "10s",
) -> None:
    """Land the log's sealed segments into lake/raw/events (exactly once, repeated event_ids dropped)."""
    settings = get_settings()
    if continuous:
        from freshrec.spark.landing_stream import main as landing_job

        landing_job(["--home", str(settings.home), "--continuous", "--trigger-interval", trigger_interval])
        return
    from freshrec.pipeline.features.runs import land_stream

    out.print_json(json.dumps(land_stream(settings)))
