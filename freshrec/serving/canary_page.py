"""Seeing the canary: `GET /canary` (a self-refreshing page) and `GET /v1/canary` (the JSON it renders).

What this replica serves (champion, canary, weight) comes from its routing table; the checks of each
analysis window and the verdict so far come from the release controller's progress file
(``freshrec.core.release_status``), present where the release runs against the same FRESHREC_HOME (the
local stack). Both routes are open, like /v1/models: reasons are shortened so no host path goes out, and
the page loads nothing from outside the app (inline CSS and JS, pinned by a Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from freshrec.core.release_status import ReleaseRecord, ReleaseStatus, read_release_status
from freshrec.serving.reconciler import public_reason
from freshrec.serving.routing import RoutingTable

RECENT = 5
WINDOWS_SHOWN = 12

router = APIRouter(tags=["ops"])


def canary_view(table: RoutingTable, status: ReleaseStatus, home: Path, now: dt.datetime) -> dict[str, Any]:
    """The page's data: what is served now, the running release's checks, the last releases."""
    canary = None
    if table.canary is not None and table.canary_weight > 0:
        canary = {"version": table.canary.version, "weight": table.canary_weight, "shadow": table.shadow}
    release = _release(status.current, home) if status.current is not None else None
    if release is not None:
        release["stale"] = canary is None or canary["version"] != release["version"]
    if canary is None:
        summary = "no canary running"
    else:
        verdict = release["verdict_so_far"] if release and not release["stale"] else "not recorded here"
        mode = "mirrored (shadow)" if canary["shadow"] else "of traffic"
        summary = f"canary {canary['version']} at {canary['weight']:g}% {mode}; verdict so far: {verdict}"
    return {
        "as_of": now.isoformat(),
        "summary": summary,
        "champion": None if table.champion is None else {"version": table.champion.version},
        "canary": canary,
        "release": release,
        "recent": [_finished(r, home) for r in status.history[:RECENT]],
    }


def _release(record: ReleaseRecord, home: Path) -> dict[str, Any]:
    latest = record.windows[-1] if record.windows else None
    return {
        "version": record.version,
        "state": record.state,
        "verdict_so_far": record.verdict_so_far,
        "started_at": record.started_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "steps": record.steps,
        "weight": record.weight,
        "shadow": record.shadow,
        "failures": record.failures,
        "reasons": [public_reason(r, home) for r in record.reasons],
        "checks": [] if latest is None else [
            {**c.model_dump(), "detail": public_reason(c.detail, home)} for c in latest.checks],
        "windows": [{**w.model_dump(exclude={"checks", "at"}), "at": w.at.isoformat()} for w in record.windows[-WINDOWS_SHOWN:]],
    }


def _finished(record: ReleaseRecord, home: Path) -> dict[str, Any]:
    return {
        "version": record.version,
        "outcome": record.state,
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "windows": len(record.windows),
        "reasons": [public_reason(r, home) for r in record.reasons],
    }


@router.get("/v1/canary", summary="Canary status: weight, checks and verdict so far, recent releases")
async def canary_status(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    status = await asyncio.to_thread(read_release_status, runtime.settings.home)
    view = canary_view(runtime.table, status, runtime.settings.home, dt.datetime.now(dt.UTC))
    return JSONResponse(view, headers={"Cache-Control": "no-store"})


@router.get("/canary", response_class=HTMLResponse, summary="Canary status page (refreshes every 3 s)")
async def canary_page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:70em}
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.5em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
.pass,.promoted,.promote,.advance{color:#176b1f;font-weight:600}
.fail,.rolled_back,.rejected,.rollback,.retry{color:#b3261e;font-weight:600}
.inconclusive,.pending,.extend,.await_approval,.interrupted{color:#8a5a00;font-weight:600}
.skipped{color:#777}#summary{font-size:1.15em;font-weight:600}#meta{color:#666}
"""

SCRIPT = """
const $ = (id) => document.getElementById(id);
function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text ?? "-"; if (cls) td.className = cls; }
function fmt(v) { return v === null || v === undefined ? "-" : (typeof v === "number" ? +v.toPrecision(4) : v); }
function fill(id, header, rows) {
  const t = $(id); t.textContent = "";
  if (!rows.length) { t.insertRow().insertCell().textContent = "none"; return; }
  const h = t.insertRow(); header.forEach((x) => { const th = document.createElement("th"); th.textContent = x; h.appendChild(th); });
  rows.forEach((r) => { const tr = t.insertRow(); r.forEach(([text, cls]) => cell(tr, fmt(text), cls)); });
}
async function refresh() {
  try {
    const s = await (await fetch("v1/canary", {cache: "no-store"})).json();
    $("summary").textContent = s.summary;
    $("champion").textContent = s.champion ? s.champion.version : "none loaded";
    $("canary").textContent = s.canary ? `${s.canary.version} at ${s.canary.weight}%${s.canary.shadow ? " (shadow)" : ""}` : "none";
    const r = s.release;
    $("release").textContent = r ? `version ${r.version}: ${r.state}, verdict so far ${r.verdict_so_far}, step ${r.weight}% of `
      + `[${r.steps.join(", ")}], failures ${r.failures}, updated ${r.updated_at}${r.stale ? " (no longer served as the canary here)" : ""}`
      : "no release in progress";
    fill("checks", ["check", "outcome", "value", "threshold", "detail"], r ? r.checks.map((c) =>
      [[c.name], [c.outcome, c.outcome], [c.value], [c.threshold], [c.detail]]) : []);
    fill("windows", ["at", "phase", "weight %", "outcome", "action", "canary requests", "canary CTR", "champion CTR"],
      r ? r.windows.map((w) => [[w.at], [w.phase], [w.weight], [w.outcome, w.outcome], [w.action, w.action],
        [w.canary_requests], [w.canary_ctr], [w.champion_ctr]]) : []);
    fill("recent", ["version", "outcome", "started", "finished", "reasons"], s.recent.map((x) =>
      [[x.version], [x.outcome, x.outcome], [x.started_at], [x.finished_at], [x.reasons.join("; ")]]));
    $("meta").textContent = `as of ${s.as_of}; refreshes every 3 s`;
  } catch (e) { $("meta").textContent = `could not load v1/canary: ${e}`; }
}
refresh(); setInterval(refresh, 3000);
"""

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>FreshRec canary</title><style>{STYLE}</style></head>
<body><h1>FreshRec canary</h1>
<p id="summary">loading...</p>
<p>Champion: <b id="champion">-</b> &middot; Canary: <b id="canary">-</b></p>
<p id="release"></p>
<h2>Checks (latest analysis window)</h2><table id="checks"></table>
<h2>Analysis windows</h2><table id="windows"></table>
<h2>Recent releases</h2><table id="recent"></table>
<p id="meta"></p>
<script>{SCRIPT}</script></body></html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)}; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
