"""The API's FastAPI application: routes per noun under ``/api/v1``, one error shape, a body limit, OpenAPI.

Every answer that is not a success is ``{"error": {"type", "message", "next", "fields"?}}`` (``studio.errors.
to_wire``) with the status its error means (404, 409, 422, …), so a client raises the server's own error class.
Routes are plain functions run in worker threads; the services own the transactions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from studio.api import (
    aliases,
    auth,
    benchmarks,
    budgets,
    clusters,
    datasets,
    deployments,
    evaluations,
    events,
    finetunes,
    images,
    keys,
    limits,
    models,
    notebooks,
    pools,
    prices,
    specs,
    usage,
    users,
)
from studio.api.auth import Caller
from studio.db import Database
from studio.errors import CoveError, NotFound, TooLarge, http_status, invalid, invalid_fields, to_wire
from studio.logs import LogReader
from studio.settings import Settings

PREFIX = "/api/v1"
ROUTERS = (
    deployments.router,
    models.router,
    keys.router,
    images.router,
    pools.router,
    clusters.router,
    users.router,
    notebooks.router,
    usage.router,
    events.router,
    specs.router,
    datasets.router,
    finetunes.router,
    aliases.router,
    evaluations.router,
    benchmarks.router,
    limits.router,
    prices.router,
    budgets.router,
)


def _as_written(err: Mapping[str, Any]) -> Mapping[str, Any]:
    """A field's place as a user wrote it: ``resources.cpu`` for the body's, ``query.limit`` for the others."""
    loc = err["loc"]
    return {**err, "loc": loc[1:]} if loc[:1] == ("body",) and len(loc) > 1 else err


def answer(exc: CoveError) -> JSONResponse:
    return JSONResponse(to_wire(exc), status_code=http_status(exc))


class BodyLimit:
    """413 for a body over ``limit`` bytes, said before the route reads it (by Content-Length, or as it streams).
    The bodies of ``streamed`` paths (uploads) are passed on as they come, under their own limit, for the route to
    write to disk: 413 by Content-Length, or raised from ``receive`` once past it."""

    def __init__(self, app: ASGIApp, limit: int, streamed: Mapping[str, int] | None = None) -> None:
        self.app, self.limit, self.streamed = app, limit, dict(streamed or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.streamed:
            await self._streamed(scope, receive, send, self.streamed[scope["path"]])
            return
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = TooLarge(
            f"the request's body is over the API's limit of {self.limit} bytes",
            hint="send less at once (COVE_MAX_BODY_BYTES sets the limit)",
        )
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await answer(too_large)(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await answer(too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        too_large = TooLarge(
            f"the upload is over the limit of {limit} bytes",
            hint="COVE_MAX_UPLOAD_BYTES sets the limit; or put the file on the server and add it by path",
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await answer(too_large)(scope, receive, send)
            return
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > limit:
                raise too_large
            return message

        await self.app(scope, counted, send)


def build_api(
    *, settings: Settings, db: Database, identify: Callable[[Request], Awaitable[Caller]] | None = None
) -> FastAPI:
    """The API over ``db``. ``identify`` says who calls: by bearer token unless given (the local CLI gives a
    trusted caller)."""
    app = FastAPI(
        title="Cove API",
        version="1",
        summary="Models, images, pools, deployments, keys, usage and people of a Cove, for code.",
        openapi_url=PREFIX + "/openapi.json",
        docs_url=PREFIX + "/docs",
        redoc_url=None,
    )
    app.state.settings, app.state.db = settings, db
    app.state.identify = identify or auth.by_token(auth.authenticator(settings, db))
    app.state.logs = LogReader(settings=settings, db=db)

    @app.exception_handler(CoveError)
    async def cove_error(_request: Request, exc: CoveError) -> JSONResponse:
        return answer(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = invalid_fields(_as_written(err) for err in exc.errors())
        return answer(invalid(fields, lead="the request is invalid: "))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return answer(NotFound(f"no such API path: {request.method} {request.url.path}", hint=f"see {PREFIX}/docs"))
        kind = CoveError(str(exc.detail))
        return JSONResponse(to_wire(kind), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX)
    uploads = {PREFIX + datasets.UPLOAD_PATH: settings.max_upload_bytes}
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, streamed=uploads)
    return app


def state(request: Request) -> Any:
    return request.app.state
