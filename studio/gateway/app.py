"""The gateway: an OpenAI-compatible ASGI app in front of every deployed model.

``POST /v1/chat/completions`` and ``/v1/completions`` (streamed or not) are checked, authenticated with an API
key, routed by model name to a ready replica (least outstanding requests), metered, and measured. Clients never
choose upstream URLs: routes come from the database, refreshed every ``routes_refresh_s`` and at once when a
request names a model the gateway has not seen. ``GET /v1/models`` lists ready deployments; ``/healthz`` and
``/metrics`` serve operators. Usage is buffered and written in batches off the event loop; nothing in a request's
path waits on the database unless it carries a key or model the gateway has not seen yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple

import aiohttp
import orjson

from studio.db import Database, utcnow
from studio.errors import CoveError
from studio.gateway.metrics import GatewayMetrics
from studio.gateway.protocol import (
    DONE,
    StreamMeter,
    check_request,
    error_body,
    estimate_prompt_tokens,
    rename_model,
    split_events,
    upstream_error,
    usage_of,
)
from studio.gateway.routes import RouteTable
from studio.services import deployments, keys, usage
from studio.services.deployments import Route
from studio.services.keys import KeyIdentity
from studio.settings import Settings

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = (b"content-type", b"application/json")
ENDPOINTS = {b"/v1/chat/completions": "chat.completions", b"/v1/completions": "completions"}
MAX_REMEMBERED_MISSES = 10_000
MAX_BUFFERED_USAGE = 100_000


class Metered(NamedTuple):
    """One request's usage, kept light on the request path; written as a UsageRecord off the event loop."""

    api_key_id: int | None
    deployment: str
    endpoint: str
    stream: bool
    status_code: int
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    latency_ms: float
    ttft_ms: float | None
    created_at: datetime


def _write_usage(db: Database, batch: list[Metered]) -> None:
    usage.record_usage(db=db, records=[m._asdict() for m in batch])


class _Reject(Exception):
    """A request answered with an OpenAI-shaped error before reaching a runtime."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", code: str | int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, type=type, code=code)


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def _ms(seconds: float) -> bytes:
    return f"{seconds * 1000:.3f}".encode()


class Gateway:
    """The ASGI app. ``load(name)`` reports requests in flight per deployment (for the autoscaler)."""

    def __init__(self, *, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.table = RouteTable()
        self.metrics = GatewayMetrics()
        self.keys: dict[str, KeyIdentity] = {}
        self._unknown_keys: dict[str, float] = {}
        self._route_misses: dict[str, bool] = {}  # name → exists, for names with no route; cleared at refresh
        self._usage: list[Metered] = []
        self._client: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._refreshed_at = 0.0
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.upstream_connect_timeout_s, sock_read=settings.upstream_read_timeout_s
        )

    def load(self, name: str) -> float:
        return float(self.table.inflight_by_deployment.get(name, 0))

    # ------------------------------------------------------------------------------------------- ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["raw_path"].split(b"?", 1)[0], scope["method"]
        endpoint = ENDPOINTS.get(path)
        if endpoint is not None and method == "POST":
            await self._proxy(scope, receive, send, endpoint)
        elif path == b"/v1/models" and method == "GET":
            await self._models(scope, send)
        elif path == b"/healthz":
            await self._health(send)
        elif path == b"/metrics":
            body = self.metrics.render()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": body})
        elif endpoint is not None or path == b"/v1/models":
            await _respond(send, 405, error_body(f"{method} is not allowed on {path.decode()}"))
        else:
            await _respond(
                send,
                404,
                error_body(
                    f"no route {path.decode(errors='replace')}: the gateway serves "
                    "/v1/chat/completions, /v1/completions and /v1/models",
                    code="not_found",
                ),
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except CoveError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        await self.refresh()
        self._tasks = [
            asyncio.create_task(self._every(self.settings.routes_refresh_s, self.refresh)),
            asyncio.create_task(self._every(self.settings.usage_flush_s, self.flush_usage)),
        ]

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush_usage()
        if self._client is not None:
            await self._client.close()

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:  # the database may be briefly unavailable; the next round retries
                log.exception("gateway background job %s failed", getattr(job, "__name__", job))

    # ------------------------------------------------------------------------------------------- state from the DB

    async def refresh(self) -> None:
        routes, active = await asyncio.to_thread(self._read_state)
        self.table.replace(routes)
        self._route_misses.clear()
        self.keys = active
        self._refreshed_at = time.monotonic()

    def _read_state(self) -> tuple[list[Route], dict[str, KeyIdentity]]:
        return deployments.ready_routes(db=self.db), keys.active_keys(db=self.db)

    async def flush_usage(self) -> None:
        if not self._usage:
            return
        batch, self._usage = self._usage, []
        try:
            await asyncio.to_thread(_write_usage, self.db, batch)
        except Exception:
            if len(self._usage) + len(batch) <= MAX_BUFFERED_USAGE:
                self._usage[:0] = batch  # keep them for the next flush rather than lose them
            raise

    # ------------------------------------------------------------------------------------------- requests

    async def _authenticate(self, scope: Scope) -> KeyIdentity | None:
        if not self.settings.auth:
            return None
        token = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = value
                break
        if not token.lower().startswith(b"bearer "):
            raise _Reject(
                401,
                "no API key given: send 'Authorization: Bearer KEY' (create one with `cove key create NAME`)",
                code="invalid_api_key",
            )
        digest = keys.hash_key(token[7:].strip().decode("latin-1"))
        identity = self.keys.get(digest)
        if identity is None and self._unknown_keys.get(digest, 0.0) < time.monotonic():
            # a key created a moment ago works at once; a wrong key costs one indexed lookup per refresh interval
            identity = await asyncio.to_thread(keys.find_key, db=self.db, key_hash=digest)
            if identity is None:
                if len(self._unknown_keys) > MAX_REMEMBERED_MISSES:
                    self._unknown_keys.clear()
                self._unknown_keys[digest] = time.monotonic() + self.settings.routes_refresh_s
            else:
                self.keys[digest] = identity
        if identity is None:
            raise _Reject(401, "invalid API key: it is unknown or was revoked", code="invalid_api_key")
        return identity

    async def _route(self, name: str) -> Route:
        route = self.table.routes.get(name)
        if route is None:  # maybe it became ready since the last refresh; look once per refresh interval
            if name in self._route_misses:
                exists = self._route_misses[name]
            else:
                exists, route = await asyncio.to_thread(deployments.find_route, db=self.db, name=name)
                if route is None and len(self._route_misses) < MAX_REMEMBERED_MISSES:
                    self._route_misses[name] = exists
            if route is not None:
                self.table.routes[name] = route
            elif exists:
                raise _Reject(
                    503,
                    f"deployment {name!r} has no ready replica yet; retry shortly (see `cove deploy list`)",
                    type="service_unavailable",
                    code="no_ready_replica",
                )
            else:
                ready = ", ".join(sorted(self.table.routes)) or "none"
                raise _Reject(404, f"the model {name!r} does not exist; ready models: {ready}", code="model_not_found")
        return route

    async def _read_body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Reject(499, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.settings.max_body_bytes:
                raise _Reject(413, f"request body exceeds {self.settings.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
        started = time.perf_counter()
        name = "unknown"
        try:
            raw = await self._read_body(receive)
            identity = await self._authenticate(scope)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise _Reject(400, f"the request body is not valid JSON: {exc}") from exc
            problem = check_request(body, endpoint)
            if problem:
                raise _Reject(400, problem)
            name = body["model"]
            route = await self._route(name)
        except _Reject as reject:
            if reject.status != 499:
                await _respond(send, reject.status, reject.body)
            self.metrics.requests.labels(
                "unknown" if reject.status == 404 else name, endpoint, str(reject.status)
            ).inc()
            return
        stream = body.get("stream") is True
        wants_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
        if stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        body["model"] = route.upstream_model
        call = _Call(
            self, route, endpoint, stream, wants_usage, identity, started, body, orjson.dumps(body), scope["raw_path"]
        )
        await call.run(receive, send)

    # ------------------------------------------------------------------------------------------- other endpoints

    async def _models(self, scope: Scope, send: Send) -> None:
        try:
            await self._authenticate(scope)
        except _Reject as reject:
            await _respond(send, reject.status, reject.body)
            return
        data = [
            {"id": r.name, "object": "model", "created": r.created, "owned_by": "cove"}
            for r in sorted(self.table.routes.values(), key=lambda r: r.name)
        ]
        await _respond(send, 200, orjson.dumps({"object": "list", "data": data}))

    async def _health(self, send: Send) -> None:
        age = time.monotonic() - self._refreshed_at
        healthy = age < max(10.0, 5 * self.settings.routes_refresh_s)
        body = {
            "status": "ok" if healthy else "degraded",
            "ready_models": len(self.table.routes),
            "state_age_s": round(age, 3),
        }
        if not healthy:
            body["problem"] = "the database has not answered recently; routes may be stale"
        await _respond(send, 200 if healthy else 503, orjson.dumps(body))


class _Call:
    """One proxied request: picks a replica (retrying another on a refused connection), relays the answer,
    meters it once, and measures it."""

    def __init__(
        self,
        gw: Gateway,
        route: Route,
        endpoint: str,
        stream: bool,
        wants_usage: bool,
        identity: KeyIdentity | None,
        started: float,
        body: dict[str, Any],
        payload: bytes,
        raw_path: bytes,
    ) -> None:
        self.gw, self.route, self.endpoint, self.stream = gw, route, endpoint, stream
        self.wants_usage, self.identity, self.started = wants_usage, identity, started
        self.body, self.payload, self.path = body, payload, raw_path.decode()
        self.status = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.estimated = False
        self.ttft: float | None = None
        self.upstream_s = 0.0  # time spent waiting on the runtime

    async def run(self, receive: Receive, send: Send) -> None:
        gw, name = self.gw, self.route.name
        gw.metrics.inflight.labels(name).inc()
        tried: set[str] = set()
        try:
            while True:
                target = gw.table.pick(self.route, time.monotonic(), exclude=frozenset(tried))
                if target is None:
                    await self._fail(
                        send,
                        502 if tried else 503,
                        f"no replica of {name!r} could be reached; retry shortly",
                        "upstream_error" if tried else "service_unavailable",
                    )
                    return
                tried.add(target)
                gw.table.begin(name, target)
                try:
                    if await self._attempt(target, receive, send):
                        return
                finally:
                    gw.table.end(name, target)
        finally:
            gw.metrics.inflight.labels(name).dec()
            self._record()

    async def _attempt(self, target: str, receive: Receive, send: Send) -> bool:
        """Relay via ``target``; False when it refused the connection and another replica may be tried."""
        gw = self.gw
        assert gw._client is not None
        sent_at = time.perf_counter()
        try:
            response = await gw._client.post(
                target + self.path, data=self.payload, headers={"content-type": "application/json"}
            )
        except aiohttp.ClientConnectorError:
            gw.table.mark_down(target, time.monotonic())
            gw.metrics.upstream_errors.labels(self.route.name, "connect").inc()
            return False
        except TimeoutError:
            gw.metrics.upstream_errors.labels(self.route.name, "timeout").inc()
            await self._fail(send, 504, "the model server did not answer in time", "timeout")
            return True
        except aiohttp.ClientError as exc:
            gw.metrics.upstream_errors.labels(self.route.name, "connect").inc()
            await self._fail(send, 502, f"the model server failed: {exc}", "upstream_error")
            return True
        try:
            if self.stream and response.status == 200:
                await self._relay_stream(response, sent_at, receive, send)
            else:
                await self._relay_body(response, sent_at, send)
        finally:
            response.release()
        return True

    async def _relay_body(self, response: aiohttp.ClientResponse, sent_at: float, send: Send) -> None:
        try:
            data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.gw.metrics.upstream_errors.labels(self.route.name, "broken_stream").inc()
            await self._fail(send, 502, f"the model server stopped answering: {exc}", "upstream_error")
            return
        self.upstream_s = time.perf_counter() - sent_at
        self.status = response.status
        if response.status == 200:
            try:
                obj = orjson.loads(data)
                counted = usage_of(obj)
                if counted is None:
                    text = "".join(
                        (c.get("message") or {}).get("content") or c.get("text") or "" for c in obj.get("choices") or []
                    )
                    counted, self.estimated = (estimate_prompt_tokens(self.body), (len(text) + 3) // 4), True
                self.prompt_tokens, self.completion_tokens = counted
                rename_model(obj, self.route.name)
                data = orjson.dumps(obj)
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                pass  # not JSON we understand: relay as it is
        else:
            data = upstream_error(response.status, data)
        overhead = time.perf_counter() - self.started - self.upstream_s
        await _respond(send, response.status, data, [(b"x-cove-overhead-ms", _ms(overhead))])
        self.gw.metrics.overhead.observe(overhead)

    async def _relay_stream(
        self, response: aiohttp.ClientResponse, sent_at: float, receive: Receive, send: Send
    ) -> None:
        meter = StreamMeter(self.route.name, self.wants_usage)
        overhead = sent_at - self.started  # what the gateway did before the runtime was asked
        self.status = 200
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-cove-overhead-ms", _ms(overhead)),
                ],
            }
        )
        self.gw.metrics.overhead.observe(overhead)
        gone = asyncio.ensure_future(receive())  # completes with http.disconnect if the client leaves
        rest = b""
        try:
            async for chunk in response.content.iter_any():
                if gone.done():
                    self.status = 499
                    return
                events, rest = split_events(rest + chunk)
                # one write per read from the runtime, however many events it carried
                out = b"".join(o for o in map(meter.process, events) if o is not None)
                if out:
                    if self.ttft is None and meter.started:
                        self.ttft = time.perf_counter() - self.started
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            if not meter.done:
                await send({"type": "http.response.body", "body": DONE, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.status = 502
            self.gw.metrics.upstream_errors.labels(self.route.name, "broken_stream").inc()
            log.warning("%s: stream broke after %d chunks: %s", self.route.name, meter.content_chunks, exc)
            message = (
                f"the model server stopped mid-stream after {meter.content_chunks} chunks "
                f"({type(exc).__name__}); retry the request"
            )
            await send(
                {
                    "type": "http.response.body",
                    "more_body": True,
                    "body": b"data: " + error_body(message, type="upstream_error", code=502) + b"\n\n",
                }
            )
            await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()
            self.upstream_s = time.perf_counter() - sent_at
            if meter.reported:
                self.prompt_tokens, self.completion_tokens = meter.prompt_tokens, meter.completion_tokens
            else:
                self.prompt_tokens, self.completion_tokens = estimate_prompt_tokens(self.body), meter.content_chunks
                self.estimated = True

    async def _fail(self, send: Send, status: int, message: str, kind: str) -> None:
        self.status = status
        await _respond(send, status, error_body(message, type=kind, code=status))

    def _record(self) -> None:
        gw, name, elapsed = self.gw, self.route.name, time.perf_counter() - self.started
        m = gw.metrics
        m.requests.labels(name, self.endpoint, str(self.status)).inc()
        m.latency.labels(name, self.endpoint).observe(elapsed)
        if self.prompt_tokens:
            m.tokens.labels(name, "prompt").inc(self.prompt_tokens)
        if self.completion_tokens:
            m.tokens.labels(name, "completion").inc(self.completion_tokens)
        if self.ttft is not None:
            m.ttft.labels(name).observe(self.ttft)
        gw._usage.append(
            Metered(
                self.identity.id if self.identity else None,
                name,
                self.endpoint,
                self.stream,
                self.status,
                self.prompt_tokens,
                self.completion_tokens,
                self.estimated,
                round(elapsed * 1000, 3),
                None if self.ttft is None else round(self.ttft * 1000, 3),
                utcnow(),
            )
        )
