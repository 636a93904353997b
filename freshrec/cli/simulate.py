"""`freshrec simulate`: open-loop traffic and ground-truth clicks against the serving tier."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from freshrec.core.errors import NotFound
from freshrec.core.layout import Layout
from freshrec.core.settings import get_settings

if TYPE_CHECKING:
    from freshrec.tools.simulation.simulator import SimulationReport

out = Console()


def default_truth(home: Path) -> Path:
    return home / "truth.npz"


def simulate(
    rate: Annotated[float, typer.Option(help="requests per second (constant arrival rate)")] = 50.0,
    duration: Annotated[float, typer.Option(help="seconds of traffic")] = 30.0,
    truth: Annotated[Path | None, typer.Option(help="ground truth .npz from `freshrec data synth --truth`")] = None,
    day: Annotated[str | None, typer.Option(help="simulated day (YYYY-MM-DD); default: after the newest raw day")] = None,
    k: Annotated[int, typer.Option(min=1, max=100, help="items per recommendation")] = 10,
    seed: Annotated[int, typer.Option(help="random seed (users and clicks)")] = 0,
    max_in_flight: Annotated[int, typer.Option(min=1, help="outstanding requests before arrivals are shed")] = 256,
    url: Annotated[str | None, typer.Option(help="serving URL (default: FRESHREC_SERVING_URL)")] = None,
    report_every: Annotated[float, typer.Option(min=0, help="seconds between progress lines (req/s, CTR so far, "
                                                "errors); 0: none")] = 10.0,
) -> None:
    """Send synthetic users' requests and clicks; print a progress line every --report-every seconds and CTR per
    variant at the end (JSON + PNG under reports/)."""
    from freshrec.tools.data.synth import load_world
    from freshrec.tools.simulation.report import write_report
    from freshrec.tools.simulation.simulator import SimulationConfig, Simulator

    settings = get_settings()
    layout = Layout(settings.home)
    truth_path = truth or default_truth(settings.home)
    if not truth_path.is_file():
        raise NotFound(f"no ground truth at {truth_path}; pass --truth (written by `freshrec data synth --truth`)")
    world = load_world(truth_path)
    if day is not None:
        sim_day: dt.date = dt.date.fromisoformat(day)
    else:
        raw_days = layout.raw_days()
        sim_day = raw_days[-1] + dt.timedelta(days=1) if raw_days else world.config.start_date
    config = SimulationConfig(url=(url or settings.serving_url).rstrip("/"), rate=rate, duration_s=duration,
                              day=sim_day, k=k, seed=seed, max_in_flight=max_in_flight)
    # Plain lines, flushed: `make up` runs the simulator in the background into a log file.
    print(f"simulate: {rate:g} req/s for {duration:g} s against {config.url}, day {sim_day}", flush=True)
    simulator = Simulator(world, config, progress=_print_status if report_every > 0 else None,
                          progress_every_s=report_every or 10.0)
    report = asyncio.run(simulator.run())
    _print_status(report, report.elapsed_s, "done: ")
    summary = report.to_dict()
    summary["day"] = sim_day.isoformat()
    json_path = write_report(summary, layout.reports / "simulate")
    table = Table(title=f"simulated {sim_day} at {rate:g} req/s")
    for column in ("variant", "versions", "requests", "clicks", "CTR", "p50 ms", "p99 ms"):
        table.add_column(column)
    for variant, s in summary["variants"].items():
        table.add_row(variant, ",".join(s["versions"]), str(s["requests"]), str(s["clicks"]),
                      f"{s['ctr']:.4f}" if s["ctr"] is not None else "-",
                      f"{s['p50_ms']:.2f}" if s["p50_ms"] is not None else "-",
                      f"{s['p99_ms']:.2f}" if s["p99_ms"] is not None else "-")
    out.print(table)
    out.print(f"sent {report.sent}/{report.planned}, shed {report.shed}, failed {dict(report.failed)}; "
              f"report {json_path}")
    out.print_json(json.dumps({k: summary[k] for k in ("sent", "shed", "failed", "achieved_rate")}))


def _print_status(report: SimulationReport, elapsed_s: float, prefix: str = "") -> None:
    print(f"simulate: {prefix}{report.status_line(elapsed_s)}", flush=True)
