"""``freshrec registry list|show|promote|rollback|state|migrate``: inspect and move model versions and aliases."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from freshrec.core.registry import Registry, ServingState, VersionView, default_actor, open_registry, parse_version

app = typer.Typer(no_args_is_help=True)
out = Console()

JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", "-r", help="why (recorded in the audit log)")]
ActorOpt = Annotated[str | None, typer.Option("--actor", help="who (default: the OS user)")]


def _aliases_of(version: int, state: ServingState) -> list[str]:
    pointers = {"champion": state.champion, "canary": state.canary, "previous": state.previous}
    return [name for name, view in pointers.items() if view is not None and view.version == version]


def _version_dict(registry: Registry, view: VersionView, state: ServingState, *, with_audit: bool) -> dict[str, Any]:
    data = view.to_dict() | {"aliases": _aliases_of(view.version, state)}
    if "canary" in data["aliases"]:
        data["canary_weight"], data["shadow"] = state.canary_weight, state.shadow
    if with_audit:
        data["audit"] = [entry.to_dict() for entry in registry.audit_log(view.version)]
    return data


def _emit_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, sort_keys=False, default=str))


# The gate metric first (gates.min_ndcg_at_10 and the no-regression check read nDCG@10), then two for context.
LIST_METRICS = ("ndcg@10", "recall@10", "hr@10")
# Off a terminal rich assumes 80 columns and squeezes every cell; a pipe or a log gets the whole row.
PIPE_WIDTH = 160


def _metric_cell(metrics: dict[str, Any], name: str) -> str:
    value = metrics.get(name)
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


@app.command("list")
def list_versions(as_json: JsonFlag = False) -> None:
    """Every version with its state and aliases."""
    with open_registry() as registry:
        state = registry.serving_state()
        rows = [_version_dict(registry, v, state, with_audit=False) for v in registry.list_versions()]
    if as_json:
        _emit_json(rows)
        return
    protocols = sorted({str(row["metrics"].get("protocol")) for row in rows if row["metrics"].get("protocol")})
    table = Table(title=f"registry (generation {state.generation})",
                  caption=f"metrics: held-out, full ranking ({', '.join(protocols) or 'no'} protocol)" if rows else None)
    for column in ("version", "state", "aliases", "created (UTC)", "by"):
        table.add_column(column, no_wrap=True)
    for name in LIST_METRICS:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("artifacts")
    table.add_column("reasons", overflow="fold")
    for row in rows:
        aliases = ", ".join(row["aliases"]) + (f" {row['canary_weight']:g}%" if "canary" in row["aliases"] else "")
        table.add_row(
            row["version"], row["state"], aliases or "-", row["created_at"][:16].replace("T", " "), row["created_by"],
            *(_metric_cell(row["metrics"], name) for name in LIST_METRICS),
            " ".join(row["artifacts"]), "; ".join(row["reasons"]) or "-",
        )
    console = out if out.is_terminal else Console(width=max(out.width, PIPE_WIDTH))
    console.print(table if rows else "no versions registered yet")


@app.command()
def show(version: str, as_json: JsonFlag = False) -> None:
    """One version: state, artifacts, metrics, lineage, verdicts, reasons and its audit trail."""
    with open_registry() as registry:
        data = _version_dict(registry, registry.get_version(version), registry.serving_state(), with_audit=True)
    if as_json:
        _emit_json(data)
        return
    out.print(f"[bold]version {data['version']}[/] state [bold]{data['state']}[/] aliases {data['aliases'] or '-'}")
    out.print(f"bundle {data['bundle_dir']}  created {data['created_at']} by {data['created_by']}")
    if data["reasons"]:
        out.print(f"[red]reasons:[/] {'; '.join(data['reasons'])}")
    if data["faults"]:
        out.print(f"[yellow]faults:[/] {data['faults']}")
    artifacts = Table(title="artifacts")
    for column in ("variant", "uri", "size", "sha256"):
        artifacts.add_column(column)
    for variant, artifact in data["artifacts"].items():
        artifacts.add_row(variant, artifact["uri"], f"{artifact['size']:,}", artifact["sha256"][:16])
    out.print(artifacts)
    for title in ("metrics", "lineage", "evidence"):
        if data[title]:
            out.print(f"[bold]{title}[/]")
            out.print_json(data=data[title])
    audit = Table(title="verdicts and audit")
    for column in ("at", "actor", "action", "reason", "after"):
        audit.add_column(column)
    for verdict in data["verdicts"]:
        audit.add_row(verdict["at"][:19], verdict["actor"], f"verdict {verdict['outcome']}", "", json.dumps(verdict["verdict"])[:80])
    for entry in data["audit"]:
        audit.add_row(entry["at"][:19], entry["actor"], entry["action"], entry["reason"] or "", json.dumps(entry["after"])[:80])
    out.print(audit)


@app.command()
def promote(version: str, reason: ReasonOpt = None, actor: ActorOpt = None, as_json: JsonFlag = False) -> None:
    """champion <- VERSION; the old champion becomes `previous` (archived); any canary alias is cleared."""
    number = parse_version(version)
    with open_registry() as registry:
        view = registry.promote(number, actor or default_actor(), reason)
        data = _version_dict(registry, view, registry.serving_state(), with_audit=False)
    if as_json:
        _emit_json(data)
    else:
        out.print(f"version {data['version']} is now the champion")


@app.command()
def rollback(reason: ReasonOpt = None, actor: ActorOpt = None, as_json: JsonFlag = False) -> None:
    """Abort the active canary (rejected, weight 0) or, without one, put `previous` back as champion."""
    with open_registry() as registry:
        state = registry.rollback(actor or default_actor(), reason)
    if as_json:
        _emit_json(state.to_dict())
    else:
        out.print(f"rolled back: champion {state.to_dict()['champion']}, canary {state.to_dict()['canary'] or '-'}")


@app.command()
def state(as_json: JsonFlag = False) -> None:
    """The serving state: champion, canary with its weight, previous, generation."""
    with open_registry() as registry:
        data = registry.serving_state().to_dict()
    if as_json:
        _emit_json(data)
    else:
        out.print(", ".join(f"{k} {v if v is not None else '-'}" for k, v in data.items()))


@app.command()
def migrate(
    downgrade: Annotated[str | None, typer.Option(help="downgrade to this revision ('base' drops every table)")] = None,
    url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: the configured registry)")] = None,
) -> None:
    """Upgrade the registry schema to head (or downgrade it); opening the registry upgrades it anyway."""
    from freshrec.core.registry import database
    from freshrec.core.settings import get_settings

    engine = database.make_engine(url or get_settings().effective_registry_url)
    try:
        before = database.current_revision(engine)
        if downgrade is None:
            database.upgrade(engine)
        else:
            database.downgrade(engine, downgrade)
        out.print(f"registry schema {before or 'empty'} -> {database.current_revision(engine) or 'empty'}")
    finally:
        engine.dispose()
