"""``freshrec export edge``: the bundle a browser or device scores with (see freshrec.pipeline.export.edge)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from freshrec.core.settings import get_settings

app = typer.Typer(no_args_is_help=True)
out = Console()


@app.command("edge")
def edge(
    version: Annotated[str | None, typer.Argument(help="registry version (default: the champion)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="bundle folder (default: FRESHREC_HOME/edge/<version>, "
                                                 "the folder the serving tier publishes)")] = None,
    max_items: Annotated[int | None, typer.Option(help="trim the candidate and cold-start lists to the N most popular "
                                                  "items (a size/latency budget for small devices)")] = None,
    force: Annotated[bool, typer.Option(help="rewrite a published bundle (clients that verified it refetch on the "
                                        "next manifest change only)")] = False,
) -> None:
    """Export the int8 student, item ids, popularity fallback and a checksummed manifest for on-device scoring.

    A published bundle is immutable per version: exporting it again is a no-op unless --force."""
    from freshrec.pipeline.export.edge import bundle_bytes, export_edge, published_manifest
    from freshrec.serving.edge import edge_root

    settings = get_settings()
    existing = published_manifest(settings, version) if out_dir is None and not force else None
    manifest = existing or export_edge(settings, version, out_dir, max_items)
    fp32 = manifest["fp32_graph_bytes"]
    stored = bundle_bytes(out_dir or edge_root(settings.home) / str(manifest["model_version"]))
    summary = {"already_published": existing is not None, "model_version": manifest["model_version"],
               "variant": manifest["artifact_variant"],
               "bytes": manifest["bytes"], "stored_bytes": stored, "fp32_graph_bytes": fp32,
               "ratio_to_fp32": round(stored / fp32, 3) if fp32 else None, "trimmed": manifest["trimmed"]}
    out.print_json(json.dumps(summary))
