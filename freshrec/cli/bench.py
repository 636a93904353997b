"""``freshrec bench ...``: benchmarks. Each writes JSON + PNG under FRESHREC_HOME/reports/bench."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from freshrec.core.settings import get_settings

app = typer.Typer(no_args_is_help=True)
out = Console()


def _ints(text: str | None) -> list[int] | None:
    return [int(x) for x in text.split(",")] if text else None


def _run(name: str, **options) -> Path:
    module = importlib.import_module(f"freshrec.tools.bench.{name}")
    given = {k: v for k, v in options.items() if v is not None}
    report = module.run(get_settings(), **given)
    out.print(f"[green]{name} benchmark[/] -> {report} (PNG beside it)")
    return report


@app.command("features")
def features(
    sizes: Annotated[str | None, typer.Option(help="event counts, e.g. 1000000,3000000,10000000")] = None,
    daily: Annotated[bool, typer.Option(help="also time one daily run (state carried) after a bootstrap, at the largest size")] = True,
) -> None:
    """Spark feature job vs DuckDB: events/s per core, time per stage, peak memory; a daily run's cost."""
    _run("features", sizes=_ints(sizes), daily=daily)


@app.command("export")
def export(candidates: Annotated[str | None, typer.Option(help="candidates per call, e.g. 1,16,256,1024")] = None) -> None:
    """ORT teacher fp32 / student fp32 / student int8 vs torch eager: latency, throughput, sizes."""
    _run("export", candidates=_ints(candidates))


@app.command("edge")
def edge(
    histories: Annotated[int | None, typer.Option(help="snapshot histories compared with /v1/recommend")] = None,
    offline_events: Annotated[int | None, typer.Option(help="events recorded offline, then sent once online")] = None,
) -> None:
    """The champion's edge bundle in headless chromium vs the server: parity, scoring p50, size, offline queue."""
    _run("edge", histories=histories, offline_events=offline_events)


@app.command("models")
def models(
    ratings: Annotated[Path, typer.Argument(help="MovieLens ratings (u.data, RecBole *.inter, ratings.dat or ratings.csv) "
                                                 "or an events folder (`freshrec data synth --out`, the raw lake)")],
    protocol: Annotated[str, typer.Option(help="msr (MS Recommenders 75/25 by item, the published table), temporal, "
                                                     "sequential (leave-last-out by time), prequential (event-by-event "
                                                     "replay) or all (every protocol, one report)")] = "msr",
) -> None:
    """Teacher, distilled student, control, int8 recipes, EASE and popularity side by side, offline; the order-blind
    and order-aware variants with FLOPs and latency per request."""
    report = _run("models", ratings=ratings, protocol=protocol)
    data = json.loads(report.read_text())
    for name, single in data.get("protocols", {data["protocol"]: data}).items():
        out.print(name, {model: round(m["ndcg@10"], 4) for model, m in single["metrics"].items()})
        out.print(name, {key: round(value, 4) for key, value in single["summary"].items()})


@app.command("signals")
def signals(
    ratings: Annotated[Path | None, typer.Option(help="also a MovieLens ratings file (every event a rating)")] = None,
) -> None:
    """Do event types and values help? The wide layer's binary vs signal-weighted Gram matrix, held out."""
    report = _run("signals", ratings=ratings)
    data = json.loads(report.read_text())
    out.print({name: {arm: round(m["ndcg@10"], 4) for arm, m in d["arms"].items()} for name, d in data["datasets"].items()})


@app.command("retrain")
def retrain(
    ratings: Annotated[Path, typer.Argument(help="MovieLens ratings: u.data, RecBole *.inter, ratings.dat or ratings.csv")],
    new_days: Annotated[int, typer.Option(help="the last N days arrive after the champion was trained")] = 14,
) -> None:
    """Warm-started retrain (from a champion trained on older days) vs the same retrain from scratch."""
    report = _run("retrain", ratings=ratings, new_days=new_days)
    data = json.loads(report.read_text())
    out.print({name: {"seconds": v["seconds_total"], "student ndcg@10": round(v["metrics"]["student"]["ndcg@10"], 4)}
               for name, v in data["variants"].items()})


@app.command("serving")
def serving(rates: Annotated[str | None, typer.Option(help="open-loop request rates to sweep, e.g. 500,1000,2000")] = None) -> None:
    """Open-loop and closed-loop HTTP load against torch-eager, ORT fp32/int8 servers."""
    _run("serving", rates=_ints(rates))


@app.command("versions")
def versions(
    base: Annotated[str, typer.Argument(help="the reference version (for example today's order-blind student)")],
    candidate: Annotated[str, typer.Argument(help="the version whose serving cost is measured against it")],
    rates: Annotated[str | None, typer.Option(help="open-loop request rates to sweep, e.g. 1000,2000,3000")] = None,
    duration: Annotated[float | None, typer.Option(help="seconds per open-loop point (default 5)")] = None,
    single_stream: Annotated[float | None, typer.Option(help="seconds of interleaved single stream (default 20)")] = None,
    rounds: Annotated[int | None, typer.Option(help="open-loop sweeps; a rate is held when every one held it (default 2)")] = None,
) -> None:
    """Two registry versions served side by side (int8, cache off): single-stream p50 delta, max-rate ratio and
    server CPU per request."""
    report = _run("versions", base=base, candidate=candidate, rates=_ints(rates), duration_s=duration,
                  single_stream_s=single_stream, rounds=rounds)
    data = json.loads(report.read_text())
    out.print({**data["targets"], "capacity_ratio_from_cpu": data["capacity_ratio_from_cpu"],
               "sustained_rate_ratio": data["sustained_rate_ratio"]})


@app.command("freshness")
def freshness() -> None:
    """New day of events landing -> new model serving as champion, end to end."""
    _run("freshness")


@app.command("quality")
def quality(
    test: Annotated[Path, typer.Argument(help="held-out ratings file (e.g. the msr test part of ML-100K)")],
    url: Annotated[str | None, typer.Option(help="serving base URL; default FRESHREC_SERVING_URL")] = None,
) -> None:
    """nDCG/recall/precision/MAP@10 of the live server's /v1/recommend on a held-out file."""
    report = _run("quality", test=test, url=url)
    metrics = json.loads(report.read_text())["metrics"]
    out.print({k: v for k, v in metrics.items() if k.endswith("@10") or k == "users"})


@app.command("realtime")
def realtime(
    days: Annotated[int | None, typer.Option(help="days in the synthetic world (default 10)")] = None,
    train_days: Annotated[int | None, typer.Option(help="the first N days train, the rest are replayed (default 7)")] = None,
    users: Annotated[int | None, typer.Option(help="users in the world (default 2000)")] = None,
    items: Annotated[int | None, typer.Option(help="items in the world (default 1000)")] = None,
    events_per_day: Annotated[int | None, typer.Option(help="mean events per day (default 20000)")] = None,
    max_events: Annotated[int | None, typer.Option(help="held-out events replayed: whole users drawn at random "
                                                           "(default 20000)")] = None,
    store: Annotated[str | None, typer.Option(help="online store: redis, embedded or both (default redis when 127.0.0.1:6379 "
                                                      "answers, else embedded)")] = None,
    parts: Annotated[str | None, typer.Option(help="comma list of quality,ops,durability (default all)")] = None,
    seed: Annotated[int | None, typer.Option(help="world and replay seed (default 42)")] = None,
) -> None:
    """Prequential replay (static vs realtime vs EASE fed the events) plus ingestion, visibility, latency, durability."""
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip()) if parts else None
    report = _run("realtime", days=days, train_days=train_days, users=users, items=items, events_per_day=events_per_day,
                  max_events=max_events, store=store, parts=chosen, seed=seed)
    data = json.loads(report.read_text())
    out.print({name: {"value": t["value"], "target": t["target"], "met": t["met"]} for name, t in data["targets"].items()})


@app.command("peers")
def peers(
    rates: Annotated[str | None, typer.Option(help="open-loop request rates to sweep, e.g. 200,1000,3000")] = None,
    duration: Annotated[float | None, typer.Option(help="seconds per measured point (default 5)")] = None,
    only: Annotated[str | None, typer.Option("--peers", help="comma list of ray-serve,bentoml,litserve,kserve (default all)")] = None,
) -> None:
    """FreshRec vs Ray Serve, BentoML, LitServe and KServe serving the same int8 model and snapshot."""
    chosen = [p.strip() for p in only.split(",") if p.strip()] if only else None
    report = _run("peers", rates=_ints(rates), duration_s=duration, peers=chosen)
    data = json.loads(report.read_text())
    out.print({name: {"value": t["value"], "target": t["target"], "met": t["met"]} for name, t in data["targets"].items()})


@app.command("faults")
def faults(
    scenarios: Annotated[str | None, typer.Option(help="comma list of worker_kill,kill_during_swap,registry_down,"
                                                        "corrupt_artifact,disk_full,overload,concurrent_promotions (default all)")] = None,
    quick: Annotated[bool, typer.Option(help="shorter phases (the CI form)")] = False,
) -> None:
    """Fault scenarios against real servers (kill -9, registry DB down, damaged ONNX, full disk, 5x overload,
    racing promotions): counts and a pass/fail verdict for each."""
    report = _run("faults", scenarios=scenarios, quick=quick)
    data = json.loads(report.read_text())
    out.print(data["verdicts"])
    if not data["passed"]:
        raise typer.Exit(1)


@app.command("scale")
def scale(
    items: Annotated[str | None, typer.Option(help="catalogue sizes, e.g. 10000,100000,1000000")] = None,
    fetch: Annotated[int | None, typer.Option(help="items the ANN index returns per request (default 100)")] = None,
    served_users: Annotated[int | None, typer.Option(help="also serve the largest size (2 workers) to this many "
                                                           "synthetic users under load (0: off)")] = None,
    rates: Annotated[str | None, typer.Option(help="open-loop rates for the served run, e.g. 500,1000,2000")] = None,
) -> None:
    """ANN retrieval vs exact full scoring by catalogue size: recall@10, single-stream latency, index build and size;
    with --served-users, the served max rate within the SLO and the memory per worker and host."""
    _run("scale", items=_ints(items), fetch=fetch, served_users=served_users, rates=_ints(rates))


@app.command("all")
def all_() -> None:
    """Every benchmark, one after another."""
    for name in ("features", "export", "serving", "freshness", "realtime", "signals"):
        _run(name)
