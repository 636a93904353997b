"""The ``freshrec`` command line. The CLI is the face: it may import every plane, nothing imports it.

Each sub-command group lives in its own module; the modules import their plane's heavy libraries
inside the commands, so ``freshrec --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from freshrec.core.errors import FreshRecError

app = typer.Typer(help="FreshRec: keep a recommender fresh and fast.", no_args_is_help=True, add_completion=False)
err = Console(stderr=True)

# (module, command group name, help)
_GROUPS = [
    ("freshrec.cli.data", "data", "Generate or import raw events into the lake."),
    ("freshrec.cli.events", "events", "Ingestion log: land it into the raw lake."),
    ("freshrec.cli.pipeline", "pipeline", "Run the DAGs in-process (features, retrain, release)."),
    ("freshrec.cli.registry", "registry", "Inspect and move model versions and aliases."),
    ("freshrec.cli.bench", "bench", "Benchmarks (JSON + PNG under FRESHREC_HOME/reports)."),
    ("freshrec.cli.release", "release", "Canary releases."),
    ("freshrec.cli.export", "export", "Bundles for other runtimes: the edge bundle for browsers and devices."),
]
# (module, command name): single commands
_COMMANDS = [
    ("freshrec.cli.serve", "serve"),
    ("freshrec.cli.simulate", "simulate"),
]


def _register() -> None:
    for module_name, name, help_text in _GROUPS:
        app.add_typer(importlib.import_module(module_name).app, name=name, help=help_text)
    for module_name, name in _COMMANDS:
        app.command(name)(getattr(importlib.import_module(module_name), name))


def main() -> None:
    _register()
    try:
        app(standalone_mode=False, prog_name="freshrec")
    except FreshRecError as exc:
        err.print(f"[bold red]error:[/] {exc.message}")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (typer's own click): one line plus usage, exit 2
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err.print(f"[bold red]error:[/] {exc.format_message()}")
        sys.exit(exc.exit_code)
