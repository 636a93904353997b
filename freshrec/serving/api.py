"""The FastAPI app: HTTP contract of ARCHITECTURE.md, OpenAPI at /docs.

``create_app`` wires the parts (registry gateway, reconciler, request service, cache, metrics, the
ingestion log and the online store); the lifespan loads the desired versions before the server accepts
traffic and keeps reconciling in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ValidationError
from starlette.types import Scope

from freshrec.core.errors import FreshRecError, InvalidInput, Overloaded, Unauthorized
from freshrec.core.eventlog import EventLog, seal_orphans
from freshrec.core.events import EventRules
from freshrec.core.layout import Layout
from freshrec.core.online import open_store
from freshrec.core.settings import Settings, get_settings
from freshrec.serving import canary_page, contract
from freshrec.serving.cache import ResultCache
from freshrec.serving.edge import router as edge_router
from freshrec.serving.ingest import Ingestor, parse_events_body
from freshrec.serving.live import LiveState
from freshrec.serving.metrics import CONTENT_TYPE, ServingMetrics
from freshrec.serving.middleware import LABELS_KEY, HotEntry, HotPath, InFlightLimit, MetricsMiddleware
from freshrec.serving.reconciler import Reconciler, public_reason
from freshrec.serving.registry_gateway import RegistryGateway, SqlRegistryGateway
from freshrec.serving.routing import RoutingTable
from freshrec.serving.service import RecommendationService, route_user
from freshrec.serving.siblings import SiblingWorkers

log = logging.getLogger(__name__)
JSON = "application/json"
BodyModel = TypeVar("BodyModel", bound=BaseModel)
HotCore = Callable[["ServingRuntime", Scope, bytes], Awaitable[tuple[int, bytes]]]


class FastPathRoute(APIRoute):
    """A route whose endpoint takes just the Request and returns a Response: FastAPI's per-request
    dependency solving (a large share of a sub-millisecond request) is skipped, while the route, its
    documented body and responses stay in the OpenAPI schema."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


class ServingRuntime:
    """The parts one serving process holds; routes reach it through ``app.state.runtime``."""

    def __init__(self, settings: Settings, gateway: RegistryGateway) -> None:
        self.settings = settings
        self.gateway = gateway
        self.metrics = ServingMetrics(settings.serving.slo_latency_ms)
        self.cache = ResultCache(settings.serving.cache_ttl_s, settings.serving.cache_size)
        # Inline scoring (None) avoids a thread hop per batch; a scoring thread lets one worker use two cores.
        self.scoring_executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="freshrec-ort") if settings.serving.scoring_thread else None
        )
        self.reconciler = Reconciler(settings, gateway, self.scoring_executor, self.metrics, self._swapped)
        self.layout = Layout(settings.home)
        store = open_store(settings) if settings.online.enabled else None
        snapshot = lambda: (self.reconciler.snapshot.name, self.reconciler.snapshot.watermark)  # noqa: E731
        self.live = LiveState(store, self.metrics, settings.online.trim_grace_s, snapshot)
        s = settings.serving
        self.log = EventLog(self.layout, fsync=s.log_fsync, max_bytes=s.log_segment_max_bytes,
                            max_age_s=s.log_segment_max_age_s, observe_fsync=self.metrics.fsync_seconds.observe)
        self.ingestor = Ingestor(self.log, self.live, EventRules.from_settings(settings.data), self.metrics)
        self.service = RecommendationService(self.cache, self.metrics, self.live, settings.data.online_history_length,
                                             settings.allow_fault_injection)
        self.siblings = SiblingWorkers.from_env()
        self.tasks: list[asyncio.Task] = []
        self._info_labels: set[tuple[str, str, str, str]] = set()

    @property
    def table(self) -> RoutingTable:
        return self.reconciler.table

    def _swapped(self, table: RoutingTable) -> None:
        self.cache.clear()
        self.service.forget()
        self.siblings.record(table.generation)
        # The loaded tables hold millions of long-lived objects (per-user arrays); left to the cyclic
        # GC they make every full collection a multi-millisecond pause, i.e. p99 spikes. Collect once
        # now and move what survives out of the GC's sight (refcounting still frees old tables).
        gc.collect()
        gc.freeze()
        m = self.metrics
        m.canary_weight.set(table.canary_weight)
        # Zero the series of versions no longer loaded (multiprocess mode cannot remove label sets).
        loaded = {(role, s.version, s.model.artifact_variant, s.model.scorer.provider) for role, s in table.loaded()}
        for labels in self._info_labels - loaded:
            m.model_info.labels(*labels).set(0)
            m.model_age.labels(*labels[:2]).set(0)
        for labels in loaded:
            m.model_info.labels(*labels).set(1)
        self._info_labels |= loaded
        self.refresh_gauges()

    def refresh_gauges(self) -> None:
        now = time.time()
        for role, served in self.table.loaded():
            created = served.model.created_at
            if created is not None:
                self.metrics.model_age.labels(role, served.version).set(now - created.timestamp())
            self.metrics.queue_depth.labels(served.version).set(served.batcher.depth)

    async def start(self) -> None:
        try:
            await self.reconciler.reconcile(force=True)
        except Exception:  # noqa: BLE001 - start unready and keep polling rather than crash-loop
            log.exception("initial reconcile failed; /readyz stays 503 until a version loads")
        # Segments of workers that died (kill -9, OOM) are sealed for the landing stream; live ones are locked.
        await asyncio.to_thread(seal_orphans, self.layout)
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self.reconciler.run_forever()), loop.create_task(self.live.run_forever())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.log.close)  # commits what is queued and seals the open segment
        if self.live.store is not None:
            await self.live.store.close()
        if self.scoring_executor is not None:
            self.scoring_executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.gateway.close)  # its pooled database connections (files, sockets)


def _runtime(request: Request) -> ServingRuntime:
    return request.app.state.runtime


def _require_admin(request: Request) -> None:
    token = request.app.state.runtime.settings.admin_token
    if token is None or not _bearer_matches(request.headers.get("authorization", ""), token.get_secret_value()):
        raise Unauthorized("admin routes need 'Authorization: Bearer <FRESHREC_ADMIN_TOKEN>'")


def _bearer_matches(header: str, token: str) -> bool:
    given = header[7:] if header[:7].lower() == "bearer " else ""
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def _require_ingest_token(runtime: ServingRuntime, scope: Scope) -> None:
    token = runtime.settings.ingest_token
    if token is None:
        return
    if not _bearer_matches(_header(scope, b"authorization"), token.get_secret_value()):
        raise Unauthorized("POST /v1/events needs 'Authorization: Bearer <FRESHREC_INGEST_TOKEN>'")


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


def _parse_body(raw: bytes, model: type[BodyModel]) -> BodyModel:
    """Validate the raw JSON body in one pydantic-core pass (FastAPI's body machinery costs more than
    the whole model call on the hot routes); errors take FastAPI's 422 path."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None


def _body_doc(model: type[BaseModel]) -> dict:
    """The OpenAPI requestBody of a route that parses its body itself."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _hoist_body_defs(spec: dict) -> dict:
    """Move the nested models of :func:`_body_doc` bodies (``$defs``) to components/schemas, where their
    ``$ref`` points: a dangling reference breaks ReDoc and every client generator."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            schemas.update(body.pop("$defs", {}))
    return spec


def _error_response(exc: FreshRecError) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))} if isinstance(exc, Overloaded) else None
    return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str, bytes: lambda b: b.decode("utf-8", "replace")})
    return JSONResponse({"error": "InvalidInput", "message": _validation_message(errors), "detail": errors}, status_code=422)


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(settings: Settings | None = None, gateway: RegistryGateway | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime = ServingRuntime(settings, gateway or SqlRegistryGateway(settings))
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # FastAPIOffline: a FastAPI app whose /docs and /redoc load their assets from the app, not a CDN.
    app = FastAPIOffline(
        title="FreshRec serving",
        version="1",
        description="Recommendations from the registry's champion (and canary), scored with ONNX Runtime.",
        lifespan=lifespan,
    )
    # The last added is the outermost: metrics see everything, including the 503s the limit sends; the hot
    # routes are answered right inside the limit, skipping Starlette's router and exception middleware.
    hot_entries: dict[str, HotEntry] = {}
    # A body past this is refused (413) before it is read whole: a batch of events at ~2 KB each, or 1 MiB.
    max_body = max(1 << 20, settings.serving.max_events_per_request * 2048)
    app.add_middleware(HotPath, entries=hot_entries, max_body_bytes=max_body)
    app.add_middleware(InFlightLimit, limit=settings.serving.max_queue + settings.serving.max_batch)
    app.add_middleware(MetricsMiddleware, runtime=lambda: getattr(app.state, "runtime", None))

    @app.exception_handler(FreshRecError)
    async def freshrec_error(_: Request, exc: FreshRecError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    responses_503: dict[int | str, dict[str, Any]] = {
        503: {"model": contract.ErrorBody, "description": "overloaded or no model loaded (Retry-After)"}}

    hot = APIRouter(route_class=FastPathRoute)

    def _route(runtime: ServingRuntime, scope: Scope, user_id: str):
        """The table and the variant this user gets; the metrics label the request with them."""
        table = runtime.table
        routed = route_user(table, user_id)
        scope[LABELS_KEY] = (routed.variant, routed.served.version)
        return table, routed

    async def _recommend(runtime: ServingRuntime, scope: Scope, raw: bytes) -> tuple[int, bytes]:
        body = _parse_body(raw, contract.RecommendRequest)
        table, routed = _route(runtime, scope, body.user_id)
        return 200, await runtime.service.recommend(table, routed, body.user_id, body.k, body.exclude_seen,
                                                    body.explain)

    async def _score(runtime: ServingRuntime, scope: Scope, raw: bytes) -> tuple[int, bytes]:
        body = _parse_body(raw, contract.ScoreRequest)
        table, routed = _route(runtime, scope, body.user_id)
        return 200, await runtime.service.score(table, routed, body.user_id, body.item_ids)

    def _known_item(runtime: ServingRuntime):
        champion = runtime.table.champion
        index = champion.model.item_index if champion is not None else {}
        return index.__contains__

    async def _events(runtime: ServingRuntime, scope: Scope, raw: bytes) -> tuple[int, bytes]:
        _require_ingest_token(runtime, scope)
        events = parse_events_body(raw, _header(scope, b"content-type"), runtime.settings.serving.max_events_per_request)
        return 200, orjson.dumps(await runtime.ingestor.ingest(events, _known_item(runtime)))

    async def _feedback(runtime: ServingRuntime, scope: Scope, raw: bytes) -> tuple[int, bytes]:
        """One event on the path /v1/events takes (logged, then visible), plus the per-variant CTR counter."""
        body = _parse_body(raw, contract.FeedbackRequest)
        event = {"user_id": body.user_id, "item_id": body.item_id, "event_type": body.event_type, "value": body.value}
        result = await runtime.ingestor.ingest([event], _known_item(runtime))
        if result["rejected"]:
            raise InvalidInput(f"event: {result['rejected'][0]['reason']}")
        # Label values must stay bounded (client strings are not): unknown versions count as "other".
        loaded = {served.version for _, served in runtime.table.loaded()}
        version = body.model_version if body.model_version in loaded else "other"
        runtime.metrics.feedback.labels(body.variant or "unknown", version, body.event_type).inc()
        return 202, b'{"accepted":true}'

    def _routed(core: HotCore) -> Callable[[Request], Awaitable[Response]]:
        """The FastAPI endpoint of a hot route: it documents the route in OpenAPI; requests are answered by
        HotPath in front of the router, so this runs only for an app mounted without that middleware."""
        async def endpoint(request: Request) -> Response:
            status, payload = await core(_runtime(request), request.scope, await request.body())
            return Response(payload, status_code=status, media_type=JSON)

        return endpoint

    def _direct(core: HotCore) -> HotEntry:
        """The pure-ASGI entry of a hot route: same core, same error bodies as the exception handlers."""
        async def entry(scope: dict, raw: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
            try:
                status, payload = await core(app.state.runtime, scope, raw)
                return status, payload, []
            except FreshRecError as exc:
                response = _error_response(exc)
            except RequestValidationError as exc:
                response = _validation_response(exc)
            extra = [(k, v) for k, v in response.raw_headers if k not in (b"content-type", b"content-length")]
            return response.status_code, bytes(response.body), extra

        return entry

    hot.add_api_route("/v1/recommend", _routed(_recommend), methods=["POST"], response_model=contract.RecommendResponse,
                      responses=responses_503, tags=["v1"], openapi_extra=_body_doc(contract.RecommendRequest),
                      name="recommend")
    hot.add_api_route("/v1/score", _routed(_score), methods=["POST"], response_model=contract.ScoreResponse,
                      responses=responses_503, tags=["v1"], openapi_extra=_body_doc(contract.ScoreRequest), name="score")
    hot.add_api_route("/v1/feedback", _routed(_feedback), methods=["POST"], response_model=contract.FeedbackResponse,
                      status_code=202, tags=["v1"], openapi_extra=_body_doc(contract.FeedbackRequest), name="feedback")
    body_faults: dict[int | str, dict[str, Any]] = {code: {"model": contract.ErrorBody, "description": text} for code, text in (
        (400, "the body is not valid JSON"), (401, "FRESHREC_INGEST_TOKEN is set and the bearer token is missing or wrong"),
        (413, "more events than serving.max_events_per_request, or a body too large"),
        (415, "Content-Type is not application/json"), (422, "the body is not {\"events\": [event, ...]}"),
        (503, "the online store or the log is unavailable: nothing was accepted (Retry-After)"))}
    hot.add_api_route("/v1/events", _routed(_events), methods=["POST"], response_model=contract.EventsResponse,
                      responses=body_faults, tags=["v1"], openapi_extra=_body_doc(contract.EventsRequest), name="events",
                      description="Ingest events: each is checked by the clean stage's rules, logged durably (fsync) and "
                      "visible to the next /v1/recommend on every worker and replica sharing the online store.")
    hot_entries.update({"/v1/recommend": _direct(_recommend), "/v1/score": _direct(_score),
                        "/v1/feedback": _direct(_feedback), "/v1/events": _direct(_events)})
    app.include_router(hot)
    app.include_router(canary_page.router)  # GET /canary and /v1/canary: the release as it happens
    app.include_router(edge_router)  # edge bundles and the demo page

    @app.get("/v1/models", tags=["v1"])
    async def models(request: Request) -> Response:
        runtime = _runtime(request)
        described = runtime.reconciler.describe()
        # An open route: refusal reasons name files; only their run folder and name go out, not the host's layout.
        for failure in described["refused"]:
            failure["reason"] = public_reason(failure["reason"], runtime.settings.home)
        described["online"] = runtime.live.describe()
        workers = runtime.siblings.generations(described["generation"])
        if len(workers) > 1:  # several workers behind this port: converged only when all of them are
            described["worker_generation"] = described["generation"]
            described["generation"] = min(workers.values())
            described["workers"] = [{"pid": pid, "generation": g} for pid, g in sorted(workers.items())]
        return Response(orjson.dumps(described), media_type=JSON)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "no champion loaded and warmed yet"}})
    async def readyz(request: Request) -> JSONResponse:
        table = _runtime(request).table
        if not table.ready or table.champion is None:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True, "champion": table.champion.version, "generation": table.generation})

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(request: Request) -> Response:
        runtime = _runtime(request)
        runtime.refresh_gauges()
        return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)

    admin = [Depends(_require_admin)]
    responses_401: dict[int | str, dict[str, Any]] = {401: {"model": contract.ErrorBody, "description": "missing or wrong bearer token"}}

    @app.post("/admin/reconcile", dependencies=admin, responses=responses_401, tags=["admin"])
    async def admin_reconcile(request: Request) -> Response:
        return Response(orjson.dumps(await _runtime(request).reconciler.reconcile(force=True)), media_type=JSON)

    @app.post("/admin/canary", dependencies=admin, responses=responses_401, tags=["admin"])
    async def admin_canary(body: contract.CanaryWeightRequest, request: Request) -> Response:
        runtime = _runtime(request)
        await asyncio.to_thread(runtime.gateway.set_canary_weight, float(body.weight), "set via the serving admin API")
        return Response(orjson.dumps(await runtime.reconciler.reconcile()), media_type=JSON)

    @app.post("/admin/promote", dependencies=admin, responses=responses_401, tags=["admin"])
    async def admin_promote(body: contract.PromoteRequest, request: Request) -> Response:
        runtime = _runtime(request)
        await asyncio.to_thread(runtime.gateway.promote, body.version, "promoted via the serving admin API")
        return Response(orjson.dumps(await runtime.reconciler.reconcile()), media_type=JSON)

    @app.post("/admin/rollback", dependencies=admin, responses=responses_401, tags=["admin"])
    async def admin_rollback(request: Request) -> Response:
        runtime = _runtime(request)
        await asyncio.to_thread(runtime.gateway.rollback, "rolled back via the serving admin API")
        return Response(orjson.dumps(await runtime.reconciler.reconcile()), media_type=JSON)

    generate_openapi = app.openapi
    app.openapi = lambda: app.openapi_schema or _hoist_body_defs(generate_openapi())  # type: ignore[method-assign]  # FastAPI's documented override
    return app
