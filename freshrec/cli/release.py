"""`freshrec release run VERSION`: the release DAG in-process against FRESHREC_SERVING_URL."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from freshrec.core.errors import InvalidInput, ReleaseRolledBack
from freshrec.core.registry import State, open_registry
from freshrec.core.settings import get_settings

app = typer.Typer(no_args_is_help=True)
out = Console()


@app.command()
def run(
    version: Annotated[str, typer.Argument(help="registry version to release")],
    interval: Annotated[float | None, typer.Option(help="analysis interval per step, seconds")] = None,
    steps: Annotated[str | None, typer.Option(help="canary weights, e.g. 5,25,50,100")] = None,
    fault_latency_ms: Annotated[float, typer.Option(help="inject this latency into the candidate (rehearsal)")] = 0.0,
    fault_error_rate: Annotated[float, typer.Option(help="inject this error share into the candidate")] = 0.0,
    require_approval: Annotated[bool, typer.Option(help="an inconclusive canary waits for a human in the UI")] = False,
    shadow_first: Annotated[bool, typer.Option(help="mirror traffic to the candidate before the canary")] = False,
    min_requests: Annotated[int | None, typer.Option(help="canary requests a window needs for a verdict")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the final verdict as JSON")] = False,
) -> None:
    """Canary-release VERSION; exit 0 when promoted, non-zero when rolled back or rejected."""
    settings = get_settings()
    if not 0 <= fault_error_rate <= 1:
        raise InvalidInput(f"--fault-error-rate must be in [0, 1], got {fault_error_rate}")
    registry = open_registry(settings)
    try:
        registry.get_version(version)  # a clear NotFound before Airflow starts
        if fault_latency_ms or fault_error_rate:
            registry.set_faults(version, latency_ms=fault_latency_ms, error_rate=fault_error_rate, actor="cli",
                                reason="release rehearsal")
    finally:
        registry.close()

    conf: dict = {"version": version, "require_approval": require_approval, "shadow_first": shadow_first}
    if interval is not None:
        conf["interval_s"] = interval
    if steps is not None:
        conf["steps"] = [float(s) for s in steps.split(",") if s.strip()]
    if min_requests is not None:
        conf["min_requests"] = min_requests

    from freshrec.dags._local import run_dag

    dag_state = run_dag("release", conf)

    registry = open_registry(settings)
    try:
        view = registry.get_version(version)
    finally:
        registry.close()
    verdict = view.verdicts[-1] if view.verdicts else {}
    summary = {"version": str(view.version), "state": view.state, "dag_run": dag_state, "reasons": view.reasons,
               "verdict": verdict}
    if as_json:
        out.print_json(json.dumps(summary, default=str))
    else:
        out.print(f"release of version {view.version}: [bold]{view.state}[/] (DAG run {dag_state})")
        for reason in view.reasons:
            out.print(f"  - {reason}")
    if view.state != State.CHAMPION:
        raise ReleaseRolledBack(f"version {version} was not promoted ({view.state})")
