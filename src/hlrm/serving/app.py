"""The HTTP API and the page: ``create_app(run)`` returns a FastAPI application.

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``, whose Swagger UI
files come from the ``swagger-ui-bundle`` package, not a CDN, so they work offline):

* ``GET /recommend?user=ID&k=10&explain=true``: a known user's top k unseen items;
* ``POST /recommend`` with ``{"items": [...], "k": 10, "explain": true}``: a new user given by
  the items they like (folded in for this request, never stored);
* ``GET /similar-items?item=ID&k=10``, ``GET /items?query=...&limit=20`` (id or title search),
  ``GET /health``, ``GET /model``; ``/`` serves the page in ``static/``.

Errors are JSON ``{"detail": ...}``: an unknown id 404, a bad parameter (k out of range, too
many items, a malformed body) 422, a body over ``limits.body_bytes`` 413. Requests only ever
reach the model through id look-ups: no path, file name or serialized object a client sends is
opened or unpickled, and the page's three files are read once from the package at start.

All model work runs in one dedicated thread, so the event loop stays free to accept requests
while a batch is scored, and the model is never used by two threads at once.
"""

import asyncio
import contextlib
import inspect
import os
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Annotated, Any

import swagger_ui_bundle
from fastapi import FastAPI, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints

import hlrm
from hlrm.errors import HlrmError, UnknownIdError
from hlrm.retrieval import AnnIndex
from hlrm.runs import Run
from hlrm.serving.batching import MicroBatcher
from hlrm.serving.service import RecommendationService


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_k: int = 100
    max_items: int = 500  # liked items in a POST /recommend
    max_id_length: int = 200
    body_bytes: int = 64 * 1024
    max_search_results: int = 100


@dataclass(frozen=True)
class Batching:
    """Micro-batching of ``GET /recommend`` (:mod:`hlrm.serving.batching`); ``enabled=False``
    scores every request on its own (the comparison in benchmarks/serve.py)."""

    enabled: bool = True
    max_batch: int = 64
    max_wait_ms: float = 2.0


STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: Swagger UI's files for ``/docs``, from the ``swagger-ui-bundle`` package (FastAPI's own
#: ``/docs`` loads them from a CDN, which a server without internet cannot reach).
DOCS_FILES = {
    "/docs/swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "/docs/swagger-ui.css": ("swagger-ui.css", "text/css; charset=utf-8"),
    "/docs/favicon.png": ("favicon-32x32.png", "image/png"),
}
#: The page loads nothing from elsewhere and runs no inline script.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class BodySizeLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before any parsing, whether
    it announces its length or streams chunks. Bodies within the limit are buffered (they are
    small by construction) and replayed to the application."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (HTTP/1.1: neither header)
            return
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._too_large(scope, send)
                return
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)

    async def _too_large(self, scope: dict, send: Any) -> None:
        response = JSONResponse(
            {"detail": f"request body over the limit of {self.limit} bytes"}, status_code=413
        )
        await response(scope, _replay([]), send)


def _replay(messages: list[dict], then: Any = None) -> Any:
    pending = list(messages)

    async def receive() -> dict:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


def _telemetry_options() -> dict[str, Any]:
    """FastAPI's native OpenTelemetry (FastAPI >= 0.16x) asks the global providers on every
    request whether anything listens: 6.5 % of a served CML request (py-spy, 64 clients,
    2026-12-01). It stays on where OpenTelemetry is configured through its ``OTEL_*``
    environment variables, and is off otherwise."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    if any(name.startswith("OTEL_") for name in os.environ):
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(
    run: Run,
    *,
    ann: AnnIndex | None = None,
    batching: Batching | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """The API and page for ``run`` (already loaded, on its device)."""
    batching = batching or Batching()
    limits = limits or Limits()
    service = RecommendationService(run, ann)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hlrm-scoring")

    def score_users(explain: Hashable, requests: Sequence[tuple[str, int]]) -> list[list[dict]]:
        deepest = max(k for _, k in requests)
        lists = service.recommend_users([user for user, _ in requests], deepest, bool(explain))
        return [ranked[:k] for ranked, (_, k) in zip(lists, requests, strict=True)]

    batcher = MicroBatcher(
        score_users,
        executor,
        max_batch=batching.max_batch,
        max_wait=batching.max_wait_ms / 1000.0,
    )

    async def in_scoring_thread(function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await batcher.close()

    app = FastAPI(
        **_telemetry_options(),
        title="hlrm",
        version=hlrm.__version__,
        summary=f"{run.model.name} recommendations for {run.split.name}",
        lifespan=lifespan,
        docs_url=None,  # served below from local files
        redoc_url=None,  # ReDoc exists only on a CDN
    )
    app.add_middleware(BodySizeLimit, limit=limits.body_bytes)

    @app.exception_handler(UnknownIdError)
    async def unknown_id(_: Request, exc: UnknownIdError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(HlrmError)
    async def bad_input(_: Request, exc: HlrmError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    Id = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_id_length)]
    K = Annotated[int, Query(ge=1, le=limits.max_k, description="How many items.")]

    class NewUser(BaseModel):
        """A user the model has not seen, given by the items they like."""

        items: list[Id] = Field(min_length=1, max_length=limits.max_items)
        k: int = Field(10, ge=1, le=limits.max_k)
        explain: bool = False

    @app.get("/recommend", summary="Top-k unseen items for a known user")
    async def recommend_user(
        user: Annotated[Id, Query(description="The user's original id.")],
        k: K = 10,
        explain: bool = False,
    ) -> dict[str, Any]:
        service.check_user(user)
        if batching.enabled:
            items = await batcher.submit(explain, (user, k))
        else:
            items = (await in_scoring_thread(service.recommend_users, [user], k, explain))[0]
        return {"user": user, "model": run.model.name, "items": items}

    @app.post("/recommend", summary="Top-k for a new user given by the items they like")
    async def recommend_new_user(body: NewUser) -> dict[str, Any]:
        service.check_items(body.items)
        items = await in_scoring_thread(
            service.recommend_new_user, body.items, body.k, body.explain
        )
        return {"given": body.items, "model": run.model.name, "items": items}

    @app.get("/similar-items", summary="Items most similar to an item")
    async def similar_items(
        item: Annotated[Id, Query(description="The item's original id.")], k: K = 10
    ) -> dict[str, Any]:
        service.check_items([item])
        items = await in_scoring_thread(service.similar_items, item, k)
        return {"item": item, "model": run.model.name, "items": items}

    @app.get("/items", summary="Search items by id or title")
    async def search_items(
        query: Annotated[str, Query(max_length=limits.max_id_length)] = "",
        limit: Annotated[int, Query(ge=1, le=limits.max_search_results)] = 20,
    ) -> dict[str, Any]:
        # a scan of the catalogue: off the event loop, beside (not in) the scoring thread
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(None, service.search_items, query, limit)
        return {"query": query, "items": items}

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": run.model.name}

    @app.get("/model", summary="The served model, its data, metrics and version")
    async def model_info() -> dict[str, Any]:
        return {
            **service.model_info(),
            "batching": {
                "enabled": batching.enabled,
                "max_batch": batching.max_batch,
                "max_wait_ms": batching.max_wait_ms,
            },
            "limits": asdict(limits),
        }

    static = resources.files("hlrm.serving") / "static"
    pages = {
        route: (static.joinpath(name).read_bytes(), media_type)
        for route, (name, media_type) in STATIC_FILES.items()
    }

    def page_route(route: str) -> None:
        content, media_type = pages[route]

        @app.get(route, include_in_schema=False)
        async def page() -> Response:
            return Response(content, media_type=media_type, headers=PAGE_HEADERS)

    pages |= {
        route: ((swagger_ui_bundle.swagger_ui_path / name).read_bytes(), media_type)
        for route, (name, media_type) in DOCS_FILES.items()
    }
    docs_page = get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title="hlrm API",
        swagger_js_url="/docs/swagger-ui-bundle.js",
        swagger_css_url="/docs/swagger-ui.css",
        swagger_favicon_url="/docs/favicon.png",
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return docs_page  # its inline start-up script rules out the page's CSP header

    for route in pages:
        page_route(route)

    app.state.service = service
    app.state.batcher = batcher
    return app
