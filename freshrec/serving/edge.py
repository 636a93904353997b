"""Edge routes: the bundle of the version a user is served (``GET /v1/edge/manifest``), its files, the demo page.

Bundles are written by ``freshrec export edge`` (and by the release after a promotion) under
``<home>/edge/<version>/``. The current bundle is not a pointer file: it is the bundle of the version the
routing table serves this user (the canary's when the user is in the canary split and its bundle exists,
the champion's otherwise), so a rollback moves edge clients back with the server, with nothing to update.
Files are immutable per version (their ETag is their sha256); the manifest is revalidated.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from freshrec.core.errors import NotFound

MANIFEST = "manifest.json"
BUNDLE_FILES = ("model.onnx", "items.json", "popular.json", "candidates.json")
# The JS client and its demo page (the repository's edge/ folder) and the onnxruntime-web build npm fetched.
CLIENT_DIR = Path(__file__).resolve().parents[2] / "edge"
ORT_DIST = CLIENT_DIR / "node_modules" / "onnxruntime-web" / "dist"
CLIENT_FILES = {"index.html": "text/html; charset=utf-8", "freshrec-edge.js": "text/javascript; charset=utf-8"}
ORT_FILES = {"ort.wasm.min.mjs": "text/javascript", "ort-wasm-simd-threaded.mjs": "text/javascript",
             "ort-wasm-simd-threaded.wasm": "application/wasm"}
IMMUTABLE = "public, max-age=31536000, immutable"


def edge_root(home: Path) -> Path:
    return home / "edge"


def stored_path(folder: Path, name: str) -> Path:
    """Where a bundle stores ``name``: gzipped, as ``<name>.gz``."""
    return folder / f"{name}.gz"


def _manifest_bytes(home: Path, version: str) -> bytes | None:
    try:
        return (edge_root(home) / version / MANIFEST).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _current(request: Request, user_id: str | None) -> tuple[str, bytes]:
    runtime = request.app.state.runtime
    table = runtime.table
    versions: list[str] = []
    if user_id:
        _, served, _ = table.route(user_id)
        if served is not None:
            versions.append(served.version)
    if table.champion is not None:
        versions.append(table.champion.version)
    for version in versions:
        raw = _manifest_bytes(runtime.settings.home, version)
        if raw is not None:
            return version, raw
    raise NotFound("no edge bundle is exported for the served version (freshrec export edge)")


def _etag_matches(request: Request, etag: str) -> bool:
    return etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]


router = APIRouter(tags=["edge"])


@router.get("/v1/edge/manifest", responses={404: {"description": "no bundle exported for the served version"}})
async def edge_manifest(request: Request, user_id: str | None = None) -> Response:
    """The manifest of the bundle this user should score with (pass ``user_id`` to follow the canary split)."""
    _, raw = _current(request, user_id)
    etag = f'"{hashlib.sha256(raw).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(raw, media_type="application/json", headers=headers)


@router.get("/v1/edge/{version}/{name}", responses={404: {"description": "no such bundle or file"}})
async def edge_file(request: Request, version: str, name: str) -> Response:
    """One file of a version's bundle; only the files its manifest names are served."""
    raw = _manifest_bytes(request.app.state.runtime.settings.home, version) if version.isdigit() else None
    files = json.loads(raw)["files"] if raw is not None else {}
    if name not in files:
        raise NotFound(f"version {version} has no edge file {name!r}")
    path = edge_root(request.app.state.runtime.settings.home) / version / name
    packed = stored_path(path.parent, name)
    stored_gzip = packed.is_file()  # bundles exported before gzip-only storage hold the file itself
    # Sent as stored to clients that accept gzip (the client checks the sha256 of the decoded bytes either way),
    # decoded here for the others. Each encoding has its own ETag, as HTTP caches require.
    gzipped = stored_gzip and "gzip" in request.headers.get("accept-encoding", "").lower()
    etag = f'"{files[name]["sha256"]}{"-gzip" if gzipped else ""}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
    if _etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    media_type = "application/octet-stream" if name.endswith(".onnx") else "application/json"
    if gzipped:
        return FileResponse(packed, headers={**headers, "Content-Encoding": "gzip"}, media_type=media_type)
    if stored_gzip:
        content = await asyncio.to_thread(lambda: gzip.decompress(packed.read_bytes()))
        return Response(content, headers=headers, media_type=media_type)
    return FileResponse(path, headers=headers, media_type=media_type)


def _static(path: Path, media_type: str) -> Response:
    if not path.is_file():
        raise NotFound(f"{path.name} is not installed (make install runs npm ci in edge/)")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/edge/", include_in_schema=False)
async def edge_demo() -> Response:
    return _static(CLIENT_DIR / "index.html", CLIENT_FILES["index.html"])


@router.get("/edge/{name}", include_in_schema=False)
async def edge_client(name: str) -> Response:
    if name not in CLIENT_FILES:
        raise NotFound(f"no edge client file {name!r}")
    return _static(CLIENT_DIR / name, CLIENT_FILES[name])


@router.get("/edge/vendor/ort/{name}", include_in_schema=False)
async def edge_ort(name: str) -> Response:
    if name not in ORT_FILES:
        raise NotFound(f"no onnxruntime-web file {name!r}")
    return _static(ORT_DIST / name, ORT_FILES[name])
