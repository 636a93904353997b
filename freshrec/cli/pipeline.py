"""``freshrec pipeline run``: the DAGs in-process (dag.test) against FRESHREC_HOME, stage by stage."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from freshrec.core.errors import DataValidationError, GateFailed, InvalidInput, NotFound, StageFailed
from freshrec.core.layout import Layout
from freshrec.core.settings import get_settings

app = typer.Typer(no_args_is_help=True)
out = Console()

STAGES = ("features", "retrain", "release")


def parse_stages(text: str | None) -> list[str]:
    if not text:
        return list(STAGES)
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise InvalidInput(f"--stages: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    return [s for s in STAGES if s in stages]  # always run in pipeline order


def resolve_days(lake_days: list[dt.date], start: dt.date | None, end: dt.date | None) -> tuple[dt.date, dt.date]:
    """The inclusive day range to process: the given bounds, else every day present in the lake."""
    if start and end and start > end:
        raise InvalidInput(f"--from {start} is after --to {end}")
    if start and end:
        return start, end
    if not lake_days:
        raise NotFound("no raw event partitions in the lake; run `freshrec data synth` or `freshrec data import` first")
    return start or lake_days[0], end or lake_days[-1]


def _date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{option}: expected YYYY-MM-DD, got {value!r}") from None


@contextlib.contextmanager
def _output(log: Path | None) -> Iterator[Console]:
    """The console for stage lines. With ``log``, everything else the run prints (Airflow's task logs,
    Spark's JVM, training progress, warnings) goes to that file instead, down to the file descriptors."""
    if log is None:
        yield out
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield Console(file=terminal)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (target, *saved):
            os.close(fd)
        terminal.close()


@contextlib.contextmanager
def _stage(console: Console, title: str) -> Iterator[None]:
    """One line per stage, its time once done; a spinner meanwhile on a terminal that shows nothing else
    (with --log: without it, the task logs scroll by)."""
    started = time.monotonic()
    console.print(title)
    with console.status(f"{title} ...") if console.is_terminal and console is not out else contextlib.nullcontext():
        yield
    console.print(f"  done in {time.monotonic() - started:.0f} s")


@app.command("run")
def run(
    from_: Annotated[str | None, typer.Option("--from", help="first event day (YYYY-MM-DD); default: first day in the lake")] = None,
    to: Annotated[str | None, typer.Option("--to", help="last event day (YYYY-MM-DD); default: last day in the lake")] = None,
    stages: Annotated[str | None, typer.Option(help="comma list of features,retrain,release; default all")] = None,
    skip_if_current: Annotated[bool, typer.Option(
        "--skip-if-current", help="skip retrain when the champion already covers the newest feature day (what "
        "scheduled runs do); by default a manual run always retrains")] = False,
    log: Annotated[Path | None, typer.Option(
        "--log", help="append Airflow's task logs, Spark's and training's output to this file; the terminal "
        "shows one line per stage")] = None,
) -> None:
    """Run features for each day (after landing the ingestion log), then retrain, then release, in-process
    against FRESHREC_HOME."""
    settings = get_settings()
    chosen = parse_stages(stages)
    start, end = _date(from_, "--from"), _date(to, "--to")
    details = f"the log {log}" if log else "the task log above"
    with _output(log) as console:
        _run(settings, console, chosen, start, end, skip_if_current, details)


def _run(settings, console: Console, chosen: list[str], start: dt.date | None, end: dt.date | None,
         skip_if_current: bool, details: str) -> None:
    from freshrec.dags._local import configure_airflow, run_dag

    configure_airflow(settings)
    layout = Layout(settings.home)
    if "features" in chosen:
        _land_ingestion_log(settings, console)
        first, last = resolve_days(layout.raw_days(), start, end)
        with _stage(console, f"[bold]features[/] {first} .. {last}"):
            state = run_dag("features_daily", {"from_ds": first.isoformat(), "to_ds": last.isoformat()})
        if state != "success":
            raise DataValidationError(
                f"features_daily {first}..{last} ended {state}: validation stopped the run or a task failed; "
                f"nothing was published for the failing day (see {details} and {layout.data_docs})"
            )
    new_versions: list[str] = []
    if "retrain" in chosen:
        before = _known_versions(settings)
        with _stage(console, "[bold]retrain[/] (teacher, distilled student, gates, int8 export)"):
            state = run_dag("retrain", {"trigger_release": False, "force": not skip_if_current})
        if state != "success":
            raise StageFailed(f"retrain ended {state}; see {details}")
        new_versions = sorted(set(_known_versions(settings)) - set(before), key=int)
        _fail_when_all_rejected(settings, new_versions)
        if new_versions:
            console.print(f"retrain registered version(s) {', '.join(new_versions)}")
        else:
            console.print("[yellow]retrain made no new version[/] (the champion already covers the newest feature day)")
    if "release" in chosen:
        for version in _versions_to_release(settings, new_versions if "retrain" in chosen else None):
            with _stage(console, f"[bold]release[/] version {version}"):
                state = run_dag("release", {"version": version})
            if state != "success":
                raise StageFailed(f"release of version {version} ended {state}; see {details}")
    console.print("[green]pipeline done[/]")


def _land_ingestion_log(settings, console: Console) -> None:
    """Events posted to the API reach the raw lake here, before the day range is read from it."""
    from freshrec.pipeline.features.runs import land_stream

    summary = land_stream(settings)
    if "skipped" not in summary:
        console.print(f"[bold]landing[/] the ingestion log: {sum(summary['events'].values())} event(s) into "
                  f"{', '.join(summary['events']) or 'no day'}")


def _known_versions(settings) -> list[str]:
    from freshrec.core.registry import open_registry

    with open_registry(settings) as registry:
        return [str(v.version) for v in registry.list_versions()]


def _fail_when_all_rejected(settings, versions: list[str]) -> None:
    """A retrain whose every new version failed its gates is a failed stage, with the gates' reasons."""
    from freshrec.core.registry import open_registry

    with open_registry(settings) as registry:
        views = [registry.get_version(v) for v in versions]
    if views and all(v.state == "rejected" for v in views):
        reasons = "; ".join(f"version {v.version}: {', '.join(v.reasons)}" for v in views)
        raise GateFailed(f"retrain's candidate was rejected by its gates ({reasons})")


def _versions_to_release(settings, restrict: list[str] | None) -> list[str]:
    """Candidates waiting for a release: those this run made, or (release alone) the newest candidate."""
    from freshrec.core.registry import open_registry

    with open_registry(settings) as registry:
        candidates = [str(v.version) for v in registry.list_versions(states=["candidate"])]
    if restrict is not None:
        return [v for v in candidates if v in restrict]
    return sorted(candidates, key=int)[-1:]
