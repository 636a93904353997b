"""``freshrec data ...``: synthetic events, MovieLens import, and the MS Recommenders split."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from freshrec.core.errors import InvalidInput
from freshrec.core.layout import Layout
from freshrec.core.settings import get_settings

app = typer.Typer(no_args_is_help=True)
import_app = typer.Typer(no_args_is_help=True, help="Import public data sets as raw events.")
split_app = typer.Typer(no_args_is_help=True, help="Train/test splits of a ratings file.")
app.add_typer(import_app, name="import")
app.add_typer(split_app, name="split")
out = Console()


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--start must be a date YYYY-MM-DD, got {text!r}") from None


@app.command("synth")
def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="events root; one ds=YYYY-MM-DD folder per day is written")],
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD")],
    days: Annotated[int, typer.Option(min=1, help="number of days")],
    users: Annotated[int, typer.Option(min=1, help="users in the world (30% join after day 0, most within ~3 weeks)")] = 2000,
    items: Annotated[int, typer.Option(min=1, help="items in the world (30% appear after day 0, most within ~3 weeks)")] = 1000,
    events_per_day: Annotated[int, typer.Option(min=0, help="mean events per day (weekly cycle around it)")] = 20_000,
    seed: Annotated[int, typer.Option(help="same seed and options -> byte-identical files")] = 42,
    truth: Annotated[Path | None, typer.Option(help="write the hidden ground truth (.npz) here")] = None,
    file_format: Annotated[str, typer.Option("--format", help="parquet, csv or jsonl")] = "parquet",
    workers: Annotated[int, typer.Option(min=1, help="processes generating days in parallel (same output)")] = 1,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    session_intent: Annotated[float, typer.Option(min=0.0, help="views come in sessions of a few minutes, each pulled "
                                                  "this hard towards a short-lived intent; 0 = no sessions")] = 0.0,
    initial_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of users and items present on day 0")] = 0.7,
    growth_days: Annotated[float, typer.Option(help="the others arrive on day 1 + Exponential(growth_days)")] = 20.0,
    newcomer_boost: Annotated[float, typer.Option(min=0.0, help="extra activity of a user on their first day, fading "
                                                  "over ~5 days")] = 0.0,
    transition_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of a session's later views that follow "
                                                    "an item-to-item chain from the previous view (sessions on); 0 = none")] = 0.0,
    repeat_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of a session's later views that re-consume "
                                                "an item viewed earlier in the session (sessions on); 0 = none")] = 0.0,
) -> None:
    """Generate synthetic raw events with latent tastes, a funnel, seasonality, newcomers and drift (and sessions)."""
    from freshrec.pipeline.data.partitions import check_format
    from freshrec.tools.data.synth import SynthConfig, synthesize
    from freshrec.tools.data.world import make_world, save_world

    config = SynthConfig(
        out=out_dir.resolve(), start=_date(start), days=days, users=users, items=items, events_per_day=events_per_day,
        seed=seed, fmt=check_format(file_format), session_intent=session_intent, initial_share=initial_share,
        growth_days=growth_days, newcomer_boost=newcomer_boost, transition_share=transition_share, repeat_share=repeat_share,
    )
    world = make_world(config.world_config())
    if truth is not None:
        written = save_world(world, truth)
        out.print(f"ground truth -> {written}")
    began, rows = time.perf_counter(), 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rows]:,} events"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=out, disable=not progress) as bar:
        task = bar.add_task("synth days", total=days, rows=0)
        for report in synthesize(config, world, workers=workers):
            rows += report.rows
            bar.update(task, advance=1, rows=rows, description=f"synth {report.day}")
    elapsed = time.perf_counter() - began
    out.print(f"[green]wrote {rows:,} events in {days} day partitions under {config.out}[/] "
              f"({elapsed:.1f} s, {rows / max(elapsed, 1e-9):,.0f} events/s)")


@import_app.command("movielens")
def import_movielens(
    path: Annotated[Path, typer.Argument(help="u.data, *.inter, ratings.dat or ratings.csv, or the folder holding one")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="events root (default: the lake's raw events)")] = None,
) -> None:
    """Import MovieLens ratings as `rating` events (value = stars), one ds= folder per event day."""
    from freshrec.pipeline.data.movielens import import_movielens as run_import

    target = out_dir.resolve() if out_dir else Layout(get_settings().home).raw_events
    with out.status(f"importing {path} ..."):
        summary = run_import(path, target)
    out.print(
        f"[green]imported {summary.rows:,} ratings[/] ({summary.fmt}) from {summary.source}: {summary.users:,} users, "
        f"{summary.items:,} items, {summary.days:,} days ({summary.first_day} .. {summary.last_day}) -> {summary.out}"
    )
    for meta in summary.metadata:
        out.print(f"metadata -> {meta}")


@split_app.command("msr")
def split_msr(
    path: Annotated[Path, typer.Argument(help="ratings file (any format `data import movielens` reads)")],
    train_out: Annotated[Path, typer.Option("--train-out", help="train part, written in the input's format")],
    test_out: Annotated[Path, typer.Option("--test-out", help="test part, written in the input's format")],
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
    ratio: Annotated[float, typer.Option(help="share of each item's ratings that goes to train")] = 0.75,
) -> None:
    """Microsoft Recommenders python_stratified_split(ratio, filter_by="item", seed) of a ratings file."""
    from freshrec.pipeline.data.movielens import read_ratings, write_ratings
    from freshrec.pipeline.data.movielens_meta import copy_metadata
    from freshrec.pipeline.data.split import stratified_split

    ratings, frame = read_ratings(path)
    train, test = stratified_split(frame, ratio=ratio, filter_by="item", seed=seed)
    write_ratings(train, train_out, like=ratings)
    write_ratings(test, test_out, like=ratings)
    copied = copy_metadata(ratings, train_out)
    out.print(f"[green]split {len(frame):,} ratings[/]: train {len(train):,} -> {train_out}, test {len(test):,} -> {test_out}")
    if copied:
        out.print("metadata copied beside the train file: " + ", ".join(str(p) for p in copied))
