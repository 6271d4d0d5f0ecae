"""The FastAPI app: routes, error answers and the search page, wired onto a :class:`~embedtune.serve.service.Service`.

:func:`create_app` loads the indexes and their models before it returns (a missing index or a
mismatched model is an error there, not at the first request), so it serves a notebook or a test as
well as ``embedtune serve``. The batching worker and the index watcher run between the app's
start-up and shut-down (its lifespan): on SIGTERM uvicorn stops accepting, lets the requests in
flight finish, and the worker answers everything still queued before the process ends.

Every error is JSON (``embedtune.error/1``: ``error``, ``status``), never an HTML page or a traceback:
a body that is not JSON is a 400, a field of the wrong type or out of range a 422 naming the field,
anything unforeseen a 500 with no detail (the detail goes to the log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from embedtune.errors import EmbedtuneError
from embedtune.index import DEFAULT_INDEXES_DIR
from embedtune.serve.config import ServeSettings
from embedtune.serve.guard import Guard
from embedtune.serve.metrics import CONTENT_TYPE, Metrics
from embedtune.serve.registry import IndexRegistry
from embedtune.serve.schemas import EmbedRequest, RequestError, SearchRequest, error_json
from embedtune.serve.service import Service

log = logging.getLogger("embedtune.serve")
STATIC = Path(str(files("embedtune.serve") / "static"))
MIN_SCORE_HELP = SearchRequest.model_fields["min_score"].description


def create_app(
    indexes: list[str | Path] | tuple[str | Path, ...],
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    settings: ServeSettings | None = None,
    *,
    model: str | Path | None = None,
) -> FastAPI:
    """The service over ``indexes`` (names under ``indexes_dir``, or paths; the first is the default)."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    reranker = None
    if settings.rerank is not None:
        from embedtune.retrieval import Reranker

        reranker = Reranker(settings.rerank)
    registry = IndexRegistry(
        indexes,
        indexes_dir,
        backend=settings.backend,
        model=model,
        reranker=reranker,
        poll_seconds=settings.reload_seconds,
    )
    service = Service(registry, settings, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="embedtune",
        summary="Search the indexes embedtune built, with the models that built them.",
        lifespan=lifespan,
    )
    app.state.service = service
    _errors(app)
    _routes(app, service, metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
    )
    app.add_middleware(Measure, metrics=metrics)  # added last = outermost: counts the guard's refusals too
    return app


class Measure:
    """Counts each answered request by route and status, with its time (a pure ASGI middleware: Starlette's
    ``BaseHTTPMiddleware`` costs a task and a stream per request, felt at hundreds of requests a second)."""

    def __init__(self, app: Any, *, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = getattr(scope.get("route"), "path", "other")
            self.metrics.observe_request(endpoint, status, time.perf_counter() - started)


def _request(model: type[BaseModel], **values: Any) -> Any:
    """``model`` made from query parameters, checked by the model itself (its ranges, finite numbers) as a
    JSON body is, and refused the same way: a 422 naming the parameter, not a 500 for an uncaught error."""
    try:
        return model(**values)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from e


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_json(status, message), status_code=status)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def refused(_request: Request, e: RequestError) -> JSONResponse:
        return _error(e.status, str(e))

    @app.exception_handler(EmbedtuneError)
    async def library_error(_request: Request, e: EmbedtuneError) -> JSONResponse:
        return _error(400, str(e))  # the library refused a parameter (e.g. nprobe on a flat index)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":
            return _error(400, f"malformed JSON: {first.get('ctx', {}).get('error', first['msg'])}")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where}: {first['msg']}" if where else first["msg"])

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def unforeseen(request: Request, e: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=e)
        return _error(500, "internal error (logged by the service)")


def _routes(app: FastAPI, service: Service, metrics: Metrics) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    # Answers are JSONResponses made here: json.dumps of plain dicts, not FastAPI's encoder walking them.
    @app.post("/search", summary="Top-k documents for one query or a batch", response_class=JSONResponse)
    async def search(request: SearchRequest) -> JSONResponse:
        return JSONResponse(await service.search(request))

    @app.get("/search", summary="Top-k documents for one query (q)", response_class=JSONResponse)
    async def search_get(
        q: Annotated[str, Query(description="The query.")],
        k: Annotated[int, Query(description="Hits (at most the service's max_k).")] = 10,
        index: Annotated[str | None, Query(description="A served index (default: the first).")] = None,
        min_score: Annotated[float | None, Query(description=MIN_SCORE_HELP)] = None,
    ) -> JSONResponse:
        request = _request(SearchRequest, query=q, k=k, index=index, min_score=min_score)
        return JSONResponse(await service.search(request))

    @app.post(
        "/embed", summary="Vectors of texts, with an index's model, precision and prompt", response_class=JSONResponse
    )
    async def embed(request: EmbedRequest) -> JSONResponse:
        return JSONResponse(await service.embed(request))

    @app.get("/indexes", summary="The served indexes: size, generation, what 'index info' says")
    async def indexes() -> dict[str, Any]:
        return {"schema": "embedtune.serve.indexes/1", "indexes": service.indexes()}

    @app.get("/health", summary="Liveness, and each index's generation")
    async def health() -> dict[str, Any]:
        served = {name: service.served(name) for name in service.registry.names}
        return {
            "status": "ok",
            "indexes": {name: s.manifest.generation for name, s in served.items()},
            "errors": {name: s.error for name, s in served.items() if s.error},
        }

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        for name in service.registry.names:
            manifest = service.served(name).manifest
            metrics.generation.labels(name).set(manifest.generation)
            metrics.documents.labels(name).set(manifest.count)
        return Response(metrics.render(), media_type=CONTENT_TYPE)
