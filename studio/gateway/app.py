"""The gateway: an OpenAI-compatible ASGI app in front of every deployed model.

``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/responses`` and ``/v1/embeddings`` (streamed or not) are
checked, authenticated with an API key, admitted against the rate limits that apply to it (``limiting``: 429 in
OpenAI's shape), routed by model name to a ready replica (least outstanding requests), metered, and measured. Clients
never choose upstream URLs: routes (and limits) come from the database, refreshed every ``routes_refresh_s`` and at
once when a request names a model the gateway has not seen. ``GET /v1/models`` lists ready deployments
(``/v1/models/{id}`` answers one); ``/healthz`` (a JSON report) and ``/metrics`` serve operators, ``/health`` (200
and no body, as vLLM's) benchmark clients' probes. Fields a deployment's runtime does not know are adapted
(``protocol.adapt_request``) and named in response headers; parameters it would ignore are done here (``n``: fanned
out) or refused by name; a Responses request goes to a runtime that serves it, else is translated onto chat
completions (``responses``). Usage is buffered and written in batches off the event loop; nothing in a request's path
waits on the database unless it carries a key or model the gateway has not seen yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import orjson
import sqlalchemy as sa

from studio.db import Database, utcnow
from studio.errors import CoveError
from studio.gateway import responses
from studio.gateway.budgeting import BudgetBook, BudgetExceeded
from studio.gateway.budgeting import Key as BudgetKey
from studio.gateway.counters import Lease
from studio.gateway.limiting import Limiter, Refused, store_of
from studio.gateway.metrics import GatewayMetrics
from studio.gateway.protocol import (
    adapt_request,
    check_request,
    error_body,
    estimate_prompt_tokens,
    model_object,
)
from studio.gateway.proxy import Metered, Proxy, Receive, Scope, Send, Upstream, respond
from studio.gateway.routes import RouteTable
from studio.gateway.spool import Batch, Spool, dead, forget, new_request_id, read_lines, rows_of
from studio.gateway.tracing import Tracing, step
from studio.gateway.waking import Wake, WakeFailed, Waker
from studio.limits import Caps, Rule
from studio.prices import FREE, Budget, Position, Price
from studio.sealing import studio_key
from studio.services import budgets, deployments, events, keys, limits, prices, usage
from studio.services.events import NewEvent
from studio.services.keys import KeyIdentity
from studio.settings import Settings
from studio.values import Route

log = logging.getLogger(__name__)

ENDPOINTS = {
    b"/v1/chat/completions": "chat.completions",
    b"/v1/completions": "completions",
    b"/v1/responses": "responses",
    b"/v1/embeddings": "embeddings",
}
# Runtimes that serve no /v1/embeddings for generative models (the transformers runtime serves embedding models with
# studio.embedder): asked for it, the gateway says so instead of relaying their 404.
NO_EMBEDDINGS = frozenset({"transformers", "triton"})
MAX_REMEMBERED_MISSES = 10_000
PAST_THE_LIMIT_HOLD = 4.0  # a 429 for unknown keys is held this many times as long as a 401: 1-2 s by default
MAX_BUFFERED_USAGE = 100_000  # records held in memory only (the spool could not write them) before the oldest go
MAX_CONNECT_BACKOFF_S = 30.0
# what a database that is down or unreachable raises (a failed migration is a CoveError)
DB_DOWN = (sa.exc.SQLAlchemyError, CoveError, OSError)


class _Reject(Exception):
    """A request answered with an OpenAI-shaped error before reaching a runtime."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | int | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, type=type, code=code, param=param)
        self.headers = headers or []


class _Asleep(Exception):
    """The deployment asked for scales to zero and has no ready replica: the request is held while it wakes."""


class Gateway:
    """The ASGI app. ``load(name)`` reports requests in flight per deployment (for the autoscaler)."""

    def __init__(self, *, settings: Settings, db: Database, prepare: Callable[[], None] | None = None) -> None:
        """``prepare``: what must succeed before the first read of the state (on a worker thread, retried with it,
        with backoff, while the database is down; so it must be idempotent): the standalone gateway migrates, ``cove
        server`` migrates, seeds and starts its controller. None when the caller has opened the database already."""
        self.settings, self.db, self.prepare = settings, db, prepare
        self.table = RouteTable()
        self.metrics = GatewayMetrics()
        self.limiter = Limiter(
            store_of(settings),
            on_store_failure=settings.limits_on_store_failure,
            max_tokens_cap=settings.limits_max_tokens,
        )
        self.budgets = BudgetBook(currency=settings.currency)
        self.up = Upstream(
            self.table,
            self.metrics,
            secret=studio_key(settings),
            limiter=self.limiter,
            currency=settings.currency,
            budgets=self.budgets,
            deadline_s=settings.upstream_deadline_s,
        )
        self.keys: dict[str, KeyIdentity] = {}
        # Every working key is in memory (read with the routes). An unknown one makes the gateway read the keys made
        # since (``_recheck_keys``), at most once per ``keys_recheck_s`` however many arrive; the rest are refused
        # from memory, and a client address past ``auth_failures_per_minute`` unknown keys gets 429 without waiting.
        self._newest_key_id = 0
        self._keys_checked_at = 0.0
        self._recheck: asyncio.Task[None] | None = None
        self._failures: dict[str, int] = {}  # client address → unknown keys it sent this minute
        self._failures_minute = 0
        # how long each refusal of an unknown key is held, drawn per request (``_hold_refusal``)
        self.refusal_draws = random.Random()
        # The usage spool (write-ahead, on local disk): see ``spool``. Dead gateways' spools are replayed once the
        # database answers.
        self.spool: Spool | None = Spool(settings.home / "spool")
        self._replayed = False
        self.up.keep = self._keep
        # The database as the gateway last found it: when it last answered, and why not since
        self._db_problem = ""
        self._db_down_since: float | None = None
        self._connected = False  # the state has been read once: the gateway can serve
        self._connect_attempts = 0
        self._next_attempt_s = 0.0
        self._rechecked_keys: set[str] = set()  # keys refused a deployment and read again since the last refresh
        self._route_misses: dict[str, bool] = {}  # name → whether the deployment exists
        self.sleepers: frozenset[str] = frozenset()  # deployments that scale to zero: a request for one wakes it
        self.waker = Waker(db=db, timeout_s=settings.wake_timeout_s, poll_s=min(0.25, settings.routes_refresh_s))
        self.asked: dict[str, datetime] = {}  # deployment → when it was last asked for, written with the usage
        self.controller_report: Callable[[], dict[str, object]] | None = None  # who leads, for /healthz
        self._tasks: list[asyncio.Task[None]] = []
        self._notices: set[asyncio.Future[None]] = set()  # budget warnings being recorded
        self.tracing: Tracing | None = None  # OpenTelemetry traces, started with the gateway when asked for
        self._flushing = asyncio.Lock()
        self._reading = asyncio.Lock()
        self._refreshed_at = 0.0
        self.metrics.database_up.set(0)
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.upstream_connect_timeout_s, sock_read=settings.upstream_read_timeout_s
        )

    @property
    def connected(self) -> bool:
        """The state has been read once: the gateway serves (``/readyz`` 200)."""
        return self._connected

    def load(self, name: str) -> float:
        """Requests in flight for ``name``, those held while it wakes included: a deployment still starting for
        held requests is not idle, and is not put back to sleep before it answers them."""
        wake = self.waker.wakes.get(name)
        return float(self.table.inflight_by_deployment.get(name, 0) + (wake.held if wake is not None else 0))

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
            if self.tracing is None:
                await self._proxy(scope, receive, send, endpoint)
            else:
                await self.tracing.request(self._proxy, scope, receive, send, endpoint)
        elif path == b"/v1/models" and method == "GET":
            await self._models(scope, send)
        elif path.startswith(b"/v1/models/") and method == "GET":
            await self._model(scope, send, path[len(b"/v1/models/") :].decode(errors="replace"))
        elif path == b"/healthz":
            await self._health(send)
        elif path == b"/livez":  # the process answers: nothing about the database (liveness)
            await respond(send, 200, b'{"status":"live"}')
        elif path == b"/readyz":
            await self._ready(send)
        elif path == b"/health":  # vLLM's and SGLang's probe, which benchmark clients call: 200 and no body
            await self._probe(send)
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
            await respond(send, 405, error_body(f"{method} is not allowed on {path.decode()}"))
        else:
            await respond(
                send,
                404,
                error_body(
                    f"no route {path.decode(errors='replace')}: the gateway serves "
                    "/v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings and /v1/models",
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
        """Open the spool and read the state. A database that does not answer does not stop the gateway: it keeps
        trying with backoff (``/readyz`` says so) and serves once it has read the state."""
        self.tracing = Tracing.start(self.settings)
        self.up.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, ttl_dns_cache=300, keepalive_timeout=self.settings.upstream_keepalive_s
            ),
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        self.up.fresh = aiohttp.ClientSession(  # one new connection per request: the retry of one that broke
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, force_close=True),
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        if self.spool is not None:
            try:
                self.spool.start()
            except OSError as exc:
                log.error(
                    "the usage spool in %s cannot be written (%s): usage is kept in memory only", self.spool.folder, exc
                )
                self.spool = None
        if not await self._connect():
            log.warning("the database does not answer yet (%s); retrying with backoff", self._db_problem)
        if not await self.limiter.store.reachable():  # also opens its first connection before any request needs it
            log.warning("the rate-limit store (%s) does not answer yet", self.limiter.store.kind)
        self._tasks = [
            asyncio.create_task(self._every(self.settings.routes_refresh_s, self._refresh_or_connect)),
            asyncio.create_task(self._every(self.settings.usage_flush_s, self.flush_usage)),
            asyncio.create_task(self._every(self.settings.budgets_refresh_s, self.refresh_spend)),
            asyncio.create_task(self._every(self.settings.usage_spool_sync_s, self._sync_spool)),
            asyncio.create_task(self._every(self.settings.usage_checkpoint_s, self._checkpoint_streams)),
        ]

    async def _connect(self) -> bool:
        """Prepare (when asked) and read the state; False, with the reason kept for ``/readyz``, when the database
        does not answer. Attempts back off exponentially up to ``MAX_CONNECT_BACKOFF_S``."""
        self._connect_attempts += 1
        try:
            if self.prepare is not None:
                await asyncio.to_thread(self.prepare)
            await self.refresh()
        except DB_DOWN as exc:  # any failure to reach or read the database: retried, reported in /readyz
            self._db_failed(exc)
            delay = min(MAX_CONNECT_BACKOFF_S, self.settings.routes_refresh_s * 2 ** min(self._connect_attempts, 10))
            self._next_attempt_s = time.monotonic() + delay
            return False
        self._connected = True
        return True

    async def _refresh_or_connect(self) -> None:
        if self._connected:
            try:
                await self.refresh()
            except DB_DOWN as exc:  # the database is down: keep serving from memory; /readyz says degraded
                self._db_failed(exc)
        elif time.monotonic() >= self._next_attempt_s and await self._connect():
            log.info("the database answers: serving")

    def _db_failed(self, exc: BaseException) -> None:
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        if self._db_down_since is None:
            self._db_down_since = time.monotonic()
            log.error("the database does not answer (%s): serving from memory, usage kept in the spool", problem)
        self._db_problem = problem
        self.metrics.database_up.set(0)

    def _db_answered(self) -> None:
        if self._db_down_since is not None:
            log.warning("the database answers again after %.1f s", time.monotonic() - self._db_down_since)
        self._db_down_since, self._db_problem = None, ""
        self.metrics.database_up.set(1)

    async def _sync_spool(self) -> None:
        if self.spool is not None:
            await asyncio.to_thread(self.spool.sync)

    async def _checkpoint_streams(self) -> None:
        """Spool what each open stream has sent so far (one line per stream, one write for all; nothing for requests
        that do not stream): a stream open when this process dies is billed that much (see ``spool``)."""
        if self.spool is not None and self.up.spooled_streams:
            reached = {
                call.request_id: call.reached()
                for call in self.up.spooled_streams
                if call.sent_tokens and call.request_id
            }
            if reached and not self.spool.checkpoint(reached):
                self.metrics.usage_unspooled.inc()

    def _keep(self, metered: Metered) -> bool:
        """Append a finished request to the spool; False (counted, logged by the spool) when the disk refused it."""
        if self.spool is not None and self.spool.done(metered._asdict()):
            return True
        self.metrics.usage_unspooled.inc()
        return False

    def _spool_open(
        self,
        request_id: str,
        identity: KeyIdentity | None,
        route: Route,
        endpoint: str,
        prompt: int,
        stream: bool,
    ) -> None:
        """Spool an admitted request before the runtime is asked: what it is billed if this process dies before it
        ends (its ``prompt`` tokens as estimated at admission, priced; see ``spool``)."""
        if self.spool is None:
            return
        record = {
            "api_key_id": identity.id if identity else None,
            "deployment": route.name,
            "endpoint": endpoint,
            "stream": stream,
            "status_code": 0,
            "prompt_tokens": prompt,
            "completion_tokens": 0,
            "estimated": True,
            "latency_ms": 0.0,
            "ttft_ms": None,
            "created_at": utcnow(),
            "model_version": route.model_version or None,
            "cost_micros": self.up.prices.get(route.name, FREE).cost(prompt, 0),
        }
        if not self.spool.open(request_id, record):
            self.metrics.usage_unspooled.inc()

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.up.counting:  # records waiting for their token counts
            await asyncio.wait(set(self.up.counting), timeout=10)
        if self.limiter.settling:
            await asyncio.wait(set(self.limiter.settling), timeout=5)
        await self.limiter.store.close()
        await self.waker.close()
        try:
            await self.flush_usage()
        except Exception:  # the database is down: what is spooled is written by the next gateway to start
            log.exception("the last usage flush failed; the spool keeps the records for the next start")
        if self.spool is not None:
            self.spool.close()
        if self.up.client is not None:
            await self.up.client.close()
        if self.up.fresh is not None:
            await self.up.fresh.close()
        if self.tracing is not None:  # the last spans (this shutdown's usage flush among them) are sent
            await asyncio.to_thread(self.tracing.close)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:  # the database may be briefly unavailable; the next round retries
                log.exception("gateway background job %s failed", getattr(job, "__name__", job))

    # ------------------------------------------------------------------------------------------- state from the DB

    async def refresh(self) -> None:
        routes, active, rules, sleepers, priced, budgeted = await asyncio.to_thread(self._read_state)
        self.sleepers = sleepers
        self.table.replace(routes)
        self.limiter.replace(rules)
        self.up.prices = priced
        had_budgets = bool(self.budgets)
        self.budgets.replace(budgeted)
        if budgeted and not had_budgets:  # the first budget: read this month's spend before enforcing it
            await self.refresh_spend()
        self._route_misses.clear()
        self._rechecked_keys.clear()
        self.keys = active
        self._newest_key_id = max([self._newest_key_id, *(i.id for i in active.values())])
        self._refreshed_at = time.monotonic()
        self._db_answered()
        self._cut_streams(active)

    def _cut_streams(self, active: dict[str, KeyIdentity]) -> None:
        """End the open streams of keys revoked or expired since they began (within one refresh interval)."""
        if not self.up.streams:
            return
        alive = {identity.id: identity for identity in active.values()}
        now = utcnow()
        for key_id, calls in list(self.up.streams.items()):
            identity = alive.get(key_id)
            if identity is None:
                reason = "the API key was revoked, or its owner disabled or removed"
            elif identity.expires_at is not None and identity.expires_at <= now:
                reason = f"API key {identity.name!r} expired"
            else:
                continue
            for call in list(calls):
                call.cut(reason)

    def _read_state(
        self,
    ) -> tuple[
        list[Route], dict[str, KeyIdentity], list[Rule], frozenset[str], dict[str, Price], dict[BudgetKey, Budget]
    ]:
        return (
            deployments.ready_routes(db=self.db),
            keys.active_keys(db=self.db),
            limits.rules(db=self.db),
            deployments.sleeper_names(db=self.db),
            prices.price_book(db=self.db),
            budgets.rules(db=self.db),
        )

    async def refresh_spend(self) -> None:
        """Re-read this month's spend per user and group (budgets; see ``budgeting``). No budget, no read. One read
        at a time (an older read finishing last would put back a smaller spend), and what was counted here before
        it is written to the table first, in the same step that starts the read: each request is counted once,
        in the table or here."""
        if not self.budgets:
            return
        async with self._reading:
            try:
                await self.flush_usage(begin_read=True)
                now = utcnow()
                spend = await asyncio.to_thread(budgets.month_spend, db=self.db, now=now)
            except BaseException:
                self.budgets.abandon_read()
                raise
            self.budgets.read(spend, now)

    async def flush_usage(self, *, begin_read: bool = False) -> None:
        """Write the usage records waiting (one flush at a time). ``begin_read``: the budgets' spend is about to be
        read from the table; their local count restarts as this batch is taken, with nothing awaited between."""
        async with self._flushing:
            if self.asked:  # when each deployment was last asked for: the controller's idle clock for scale to zero
                asked, self.asked = self.asked, {}
                try:
                    await asyncio.to_thread(deployments.record_requests, db=self.db, seen=asked)
                except Exception:
                    self.asked = {**asked, **self.asked}
                    raise
            if begin_read:
                self.budgets.begin_read()
            # the batch is taken with nothing awaited in between: what the spool appended since the last flush (and
            # what only memory holds)
            batch = self.spool.rotate() if self.spool is not None else None
            memory, self.up.metered = self.up.metered, []
            if batch is not None and not batch.segments and not batch.rows:
                batch = None
            if batch is None and not memory and self._replayed:
                return
            try:
                with step(self.tracing, "usage flush", {"cove.usage.segments": len(batch.segments) if batch else 0}):
                    await asyncio.to_thread(self._write_usage, batch, memory)
            except Exception:
                if batch is not None and self.spool is not None:
                    self.spool.restore(batch)
                self._hold(memory)
                raise

    def _write_usage(self, batch: Batch | None, memory: list[Metered]) -> None:
        """Write a batch of the spool and records only memory holds (one transaction), then delete the batch's
        segments; first, once, the spools of gateways that died (this home's earlier processes among them: the only
        segments read back from disk, with a batch too large to keep in memory). On a worker thread."""
        if not self._replayed and self.spool is not None:
            for lock, dead_segments in dead(self.spool.folder):
                rows = rows_of(read_lines(dead_segments))
                usage.record_usage(db=self.db, records=rows)
                forget(lock, dead_segments)
                log.warning("replayed %d usage records a stopped gateway left in %s", len(rows), lock.parent)
        self._replayed = True
        rows = self.spool.rows(batch) if batch is not None and self.spool is not None else []
        if memory:  # a record the spool could not append: the one in memory is the request's final word
            kept = {m.request_id for m in memory}
            rows = [r for r in rows if r["request_id"] not in kept] + [m._asdict() for m in memory]
        self.metrics.usage_pending.set(len(rows))
        usage.record_usage(db=self.db, records=rows)
        self.metrics.usage_pending.set(0)
        if batch is not None and self.spool is not None:
            self.spool.written(batch)

    def _hold(self, memory: list[Metered]) -> None:
        """Put back records only memory holds after a failed write; past ``MAX_BUFFERED_USAGE`` the oldest are
        dropped, counted and logged (never silently)."""
        self.up.metered[:0] = memory
        over = len(self.up.metered) - MAX_BUFFERED_USAGE
        if over > 0:
            del self.up.metered[:over]
            self.metrics.usage_lost.inc(over)
            log.error("dropped %d usage records: the spool could not write them and the database is down", over)

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
        if identity is None:
            identity = await self._unknown_key(digest, scope)
        if identity.expires_at is not None and identity.expires_at <= utcnow():
            raise _Reject(
                401,
                f"API key {identity.name!r} expired at {identity.expires_at:%Y-%m-%d %H:%M} UTC: create a new one",
                code="expired_api_key",
            )
        return identity

    async def _unknown_key(self, digest: str, scope: Scope) -> KeyIdentity:
        """A key not in memory: one made a moment ago works once the keys made since are read (at most once per
        ``keys_recheck_s``, however many unknown keys arrive: each waits for the next read); any other
        is refused (401), and after ``auth_failures_per_minute`` of them from one address, refused with 429 without a
        read. Each refusal is held 1–2 × ``keys_recheck_s`` from its arrival, a 429 ``PAST_THE_LIMIT_HOLD`` times as
        long (``_hold_refusal``)."""
        arrived = time.monotonic()
        address = (scope.get("client") or ("unknown", 0))[0]
        minute = int(time.monotonic() // 60)
        if minute != self._failures_minute:
            self._failures_minute, self._failures = minute, {}
        if self._failures.get(address, 0) >= self.settings.auth_failures_per_minute:
            self.metrics.auth_refusals.labels("too_many_failures").inc()
            # held longer than a 401: this address is known to be guessing, and each answer sooner is one more guess
            await self._hold_refusal(arrived, PAST_THE_LIMIT_HOLD)
            wait = 60 - int(time.monotonic() % 60)
            raise _Reject(
                429,
                f"too many requests with unknown API keys from {address}: wait {wait} s, and check the key you send",
                type="rate_limit_error",
                code="too_many_auth_failures",
                headers=[(b"retry-after", str(wait).encode())],
            )
        await self._recheck_keys()
        identity = self.keys.get(digest)
        if identity is None:
            if len(self._failures) < MAX_REMEMBERED_MISSES or address in self._failures:
                self._failures[address] = self._failures.get(address, 0) + 1
            self.metrics.auth_refusals.labels("unknown_key").inc()
            await self._hold_refusal(arrived)
            raise _Reject(
                401, "invalid API key: it is unknown or was revoked, or its owner is disabled", code="invalid_api_key"
            )
        return identity

    async def _hold_refusal(self, arrived: float, times: float = 1.0) -> None:
        """Hold a refused key's answer until ``arrived`` plus a wait drawn from 1–2 × ``keys_recheck_s`` (× ``times``).

        Refused at once, a flood sends as fast as the gateway answers, and real requests wait behind it in the event
        loop. Held a fixed time, or until the shared read of new keys, a flood's connections (each sending its next
        key when the last is refused) are answered in step and come back in step: a few bursts a second, each of
        them in the way of whatever real request arrives with it (``benchmarks/key_flood.py``). A wait drawn per
        request spreads them out; at least ``keys_recheck_s``, so that the read an unknown key waited for (which
        starts within ``keys_recheck_s`` of its arrival) is mostly over by then and does not release its waiters
        together."""
        hold = self.settings.keys_recheck_s * times * (1 + self.refusal_draws.random())
        await asyncio.sleep(max(0.0, arrived + hold - time.monotonic()))

    async def _recheck_keys(self) -> None:
        """Read the keys made since the newest one in memory; one read at a time, shared by whoever waits."""
        if self._recheck is None:  # one read per keys_recheck_s at most: those arriving sooner wait for the next
            wait = self._keys_checked_at + self.settings.keys_recheck_s - time.monotonic()
            self._keys_checked_at = time.monotonic() + max(0.0, wait)
            self._recheck = asyncio.ensure_future(self._read_new_keys(max(0.0, wait)))
        task = self._recheck
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._recheck is task:
                self._recheck = None

    async def _read_new_keys(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        try:
            fresh = await asyncio.to_thread(keys.keys_since, db=self.db, after_id=self._newest_key_id)
        except DB_DOWN as exc:  # the database is down: unknown keys are refused until it answers
            self._db_failed(exc)
            return
        self.keys.update(fresh)
        self._newest_key_id = max([self._newest_key_id, *(i.id for i in fresh.values())])

    async def _authorize(self, identity: KeyIdentity | None, name: str) -> None:
        """403 when the key may not call deployment ``name`` (read once more first: the deployment may be new)."""
        if identity is None or identity.refusal(name) is None:
            return
        digest = identity.key_hash
        if digest not in self._rechecked_keys:
            self._rechecked_keys.add(digest)
            fresh = await asyncio.to_thread(keys.find_key, db=self.db, key_hash=digest)
            if fresh is not None:
                self.keys[digest], identity = fresh, fresh
        refusal = identity.refusal(name)
        if refusal is not None:
            raise _Reject(403, refusal, type="permission_error", code="key_scope")

    @staticmethod
    def _may_call(identity: KeyIdentity | None, name: str) -> bool:
        return identity is None or identity.refusal(name) is None

    async def _route(self, name: str, identity: KeyIdentity | None) -> Route:
        """The route to ``name``; else 503 when it exists without a ready replica (403 first, for a key that may not
        call it) or 404, whose list of ready models names only those the key may call."""
        route = self.table.routes.get(name)
        if route is None and name in self.sleepers:  # asleep (or waking): held, not refused
            await self._authorize(identity, name)
            raise _Asleep(name)
        if route is None:  # maybe it became ready since the last refresh
            if name in self._route_misses:
                exists = self._route_misses[name]
            else:
                exists, route = await asyncio.to_thread(deployments.find_route, db=self.db, name=name)
                if route is None and len(self._route_misses) < MAX_REMEMBERED_MISSES:
                    self._route_misses[name] = exists
            if route is not None:
                self.table.routes[name] = route
            elif exists:
                await self._authorize(identity, name)  # "retry shortly" would be false for a key refused it
                raise _Reject(
                    503,
                    f"deployment {name!r} has no ready replica yet; retry shortly (see `cove deploy list`)",
                    type="service_unavailable",
                    code="no_ready_replica",
                )
            else:
                ready = ", ".join(n for n in sorted(self.table.routes) if self._may_call(identity, n)) or "none"
                raise _Reject(404, f"the model {name!r} does not exist; ready models: {ready}", code="model_not_found")
        return route

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The request's body: 413 when it says or turns out to be over ``max_body_bytes``, 408 when it is not all
        there within ``body_timeout_s`` (a client trickling it holds nothing for long)."""
        limit = self.settings.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _Reject(413, f"request body exceeds {limit} bytes")
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                return await self._receive_body(receive)
        except TimeoutError as exc:
            raise _Reject(
                408, f"the request body did not arrive within {self.settings.body_timeout_s:g} s", code="timeout"
            ) from exc

    async def _receive_body(self, receive: Receive) -> bytes:
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
            if not self._connected:  # never read the database yet: no key could be checked
                raise _Reject(
                    503,
                    "the gateway is starting and has not reached its database yet; retry shortly",
                    type="service_unavailable",
                    code="starting",
                    headers=[(b"retry-after", b"5")],
                )
            identity = await self._authenticate(scope)  # before the body: an unknown key costs no upload
            raw = await self._read_body(scope, receive)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise _Reject(400, f"the request body is not valid JSON: {exc}") from exc
            problem, param = responses.check(body) if endpoint == "responses" else (check_request(body, endpoint), "")
            if problem:
                raise _Reject(400, problem, param=param or None)
            name = body["model"]
            try:
                found: Route | None = await self._route(name, identity)
            except _Asleep:
                found = None
            await self._authorize(identity, name)
            if self.tracing is not None:
                self.tracing.annotate(name, identity.id if identity else None, identity.name if identity else None)
        except _Reject as reject:
            if reject.status != 499:
                await respond(send, reject.status, reject.body, reject.headers)
            self.metrics.requests.labels(
                "unknown" if reject.status == 404 else name, endpoint, str(reject.status), ""
            ).inc()
            return
        stream = body.get("stream") is True
        # a spent budget is refused before anything else, so it never wakes a sleeping deployment (no reservation)
        limit_headers: list[tuple[bytes, bytes]] = []
        if identity is not None and self.budgets:
            try:
                with step(self.tracing, "check budget"):
                    limit_headers, warned = self.budgets.check(identity.owner, identity.groups, utcnow())
            except BudgetExceeded as spent:
                await respond(send, spent.status, spent.body, spent.headers)
                self.metrics.requests.labels(name, endpoint, str(spent.status), "").inc()
                self.metrics.budget_refusals.labels(name).inc()
                return
            if warned is not None:
                self._warn(warned)
        self.asked[name] = utcnow()
        if found is None:
            with step(self.tracing, "wake"):
                woken = await self._wake(name, endpoint, stream, send)
            if woken is None:
                return
            found, send = woken
        route = self.table.split(found)
        path, answer_as_response = scope["raw_path"], None
        if route.embeds != (endpoint == "embeddings") and (route.embeds or route.runtime in NO_EMBEDDINGS):
            message = (
                f"deployment {name!r} serves an embedding model: call /v1/embeddings"
                if route.embeds
                else f"deployment {name!r} cannot answer embeddings: its runtime ({route.runtime}) serves none; "
                "deploy an embedding model (on transformers, vllm, sglang or a custom image that serves /v1/embeddings)"
            )
            await respond(send, 400, error_body(message, code="unsupported_endpoint", param="model"))
            self.metrics.requests.labels(name, endpoint, "400", "").inc()
            return
        caps = Caps(found.max_tokens_cap or self.settings.limits_max_tokens, found.n_cap or self.settings.limits_max_n)
        if over := caps.excess(body):
            await respond(send, 400, error_body(over[0], param=over[1], code="invalid_value"))
            self.metrics.requests.labels(name, endpoint, "400", "").inc()
            return
        if endpoint == "responses":
            try:
                path, body, answer_as_response = self._responses_plan(route, body)
            except _Reject as reject:
                await respond(send, reject.status, reject.body)
                self.metrics.requests.labels(name, endpoint, str(reject.status), "").inc()
                return
        if endpoint == "responses":  # a Response carries its usage (in response.completed): never stripped
            wants_usage = True
        else:
            wants_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
        if stream and (endpoint != "responses" or answer_as_response is not None):
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        upstream_endpoint = "chat.completions" if answer_as_response is not None else endpoint
        adapted = adapt_request(route.runtime, upstream_endpoint, {**body, "model": route.upstream_model})
        if adapted.refusal:
            await respond(send, 400, error_body(adapted.refusal, param=adapted.param, code="unsupported_parameter"))
            self.metrics.requests.labels(name, endpoint, "400", "").inc()
            return
        # admitted against the rate limits last, once nothing else can refuse it: a refusal holds no reservation
        lease: Lease | None = None
        prompt = estimate_prompt_tokens(body)  # what the limits reserve and the spool bills a request cut short
        if applying := self.limiter.applying(identity, name):  # no store call for a request no limit applies to
            try:
                with step(self.tracing, "admit limits"):
                    lease, rate_headers = await self.limiter.admit(
                        applying, body, prompt_tokens=prompt, max_tokens_cap=caps.max_tokens
                    )
                limit_headers += rate_headers
            except Refused as refused:
                await respond(send, refused.status, refused.body, refused.headers)
                self.metrics.requests.labels(name, endpoint, str(refused.status), "").inc()
                return
        request_id = new_request_id()
        self._spool_open(request_id, identity, route, endpoint, prompt, stream)
        call = (Proxy if self.tracing is None else self.tracing.proxy)(
            self.up,
            route,
            endpoint,
            stream,
            wants_usage,
            identity,
            started,
            # what the request's tokens are counted from when the runtime reports none: chat messages
            responses.to_chat(body) if endpoint == "responses" and answer_as_response is None else body,
            [orjson.dumps(copy) for copy in adapted.copies()],
            path,
            [*adapted.headers(), *limit_headers, (b"x-request-id", request_id.encode())],
            lease=lease,
            answer_as_response=answer_as_response,
            request_id=request_id,
            admitted_prompt_tokens=prompt,
        )
        await call.run(receive, send)

    async def _wake(self, name: str, endpoint: str, stream: bool, send: Send) -> tuple[Route, Send] | None:
        """Hold a request for sleeping deployment ``name`` until a replica is ready: its route and the ``send`` to
        answer through (a stream has begun already, with a comment per phase), or None once answered with 503."""
        if stream:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                }
            )

        async def progress(phase: str) -> None:
            line = f": waking {name} — {phase}\n\n".encode()
            await send({"type": "http.response.body", "body": line, "more_body": True})

        held_at = time.perf_counter()
        try:
            route, wake = await self.waker.hold(name, progress if stream else None)
        except WakeFailed as failed:
            body = error_body(str(failed), type="service_unavailable", code=failed.code)
            if stream:
                await send({"type": "http.response.body", "body": b"data: " + body + b"\n\n"})
            else:
                await respond(send, 503, body, [(b"retry-after", str(failed.retry_after).encode())])
            self.metrics.requests.labels(name, endpoint, "503", "").inc()
            return None
        self.table.routes.setdefault(name, route)
        return route, _AfterWake(send, streamed=stream, first=lambda: self._woke(name, wake, held_at))

    def _woke(self, name: str, wake: Wake, held_at: float) -> None:
        """A held request's first token: its cold start, in ``/metrics`` and (the wake's first) on the deployment."""
        self.metrics.cold_start.observe((name,), time.perf_counter() - held_at)
        self.waker.record_cold_start(wake)

    def _warn(self, position: Position) -> None:
        """Record, off the request's path, that a budget passed its warning threshold (once a month per gateway)."""
        budget = position.budget
        message = (
            f"{budget.describe()} passed {budget.warn_at}%: {budget.show(position.spent, self.settings.currency)} "
            f"of {budget.show(budget.amount, self.settings.currency)} spent this month"
        )
        log.warning("%s", message)
        event = NewEvent(reason="BudgetWarning", message=message, type="Warning")
        task = asyncio.ensure_future(
            asyncio.to_thread(
                events.record_events,
                db=self.db,
                kind="budget",
                name=f"{budget.scope.value}/{budget.subject}",
                events=[event],
            )
        )
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    @staticmethod
    def _responses_plan(route: Route, body: dict[str, Any]) -> tuple[bytes, dict[str, Any], dict[str, Any] | None]:
        """How a Responses API request goes to ``route``'s runtime: (upstream path, body, the request to answer as
        a Response or None). Runtimes that serve /v1/responses get it as sent (400 for a field they would ignore);
        the others get it translated onto chat completions (400 for a field that does not translate)."""
        if route.runtime in responses.NATIVE:
            ignored = responses.ignored_natively(route.runtime, body)
            if ignored:
                message = (
                    f"'{ignored}' is not supported by this deployment's runtime ({route.runtime}), which would "
                    "ignore it; send the request without it (see docs/api.md)"
                )
                raise _Reject(400, message, code="unsupported_parameter", param=ignored)
            # `transformers serve` streams a Response unless told not to (OpenAI's default is not to)
            return b"/v1/responses", {**body, "stream": body.get("stream") is True}, None
        field = responses.untranslatable(body)
        if field:
            message = (
                f"'{field}' is not supported for deployment {route.name!r}: its runtime ({route.runtime}) serves no "
                "Responses API, and the gateway's translation onto chat completions does not carry it"
            )
            raise _Reject(400, message, code="unsupported_parameter", param=field)
        return b"/v1/chat/completions", responses.to_chat(body), {**body, "model": route.name}

    # ------------------------------------------------------------------------------------------- other endpoints

    async def _models(self, scope: Scope, send: Send) -> None:
        try:
            identity = await self._authenticate(scope)
        except _Reject as reject:
            await respond(send, reject.status, reject.body)
            return
        data = [
            model_object(r)
            for r in sorted(self.table.routes.values(), key=lambda r: r.name)
            if self._may_call(identity, r.name)  # only what this key may call
        ]
        await respond(send, 200, orjson.dumps({"object": "list", "data": data}))

    async def _model(self, scope: Scope, send: Send, name: str) -> None:
        """One model as ``/v1/models`` lists it; 404 alike for a model that is not ready and one the key may not
        call (a limited key learns nothing of the others)."""
        try:
            identity = await self._authenticate(scope)
        except _Reject as reject:
            await respond(send, reject.status, reject.body)
            return
        try:
            route: Route | None = await self._route(name, identity)  # one made ready a moment ago is found too
        except _Reject:
            route = None
        if route is None or not self._may_call(identity, name):
            message = f"the model {name!r} does not exist or is not ready (see GET /v1/models)"
            await respond(send, 404, error_body(message, code="model_not_found", param="model"))
            return
        await respond(send, 200, orjson.dumps(model_object(route)))

    def _healthy(self) -> tuple[bool, float]:
        age = time.monotonic() - self._refreshed_at
        return age < max(10.0, 5 * self.settings.routes_refresh_s), age

    async def _probe(self, send: Send) -> None:
        healthy, _ = self._healthy()
        await send({"type": "http.response.start", "status": 200 if healthy else 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def _ready(self, send: Send) -> None:
        """Readiness: 503 only until the state was first read (nothing to serve with). While the database is down
        afterwards the gateway still serves from memory, so it stays ready and says ``degraded``."""
        body: dict[str, object] = {"status": "ok", "ready_models": len(self.table.routes), "keys": len(self.keys)}
        if not self._connected:
            wait = max(0.0, self._next_attempt_s - time.monotonic())
            body |= {
                "status": "starting",
                "problem": f"the database does not answer ({self._db_problem}); attempt {self._connect_attempts}, "
                f"next in {wait:.0f} s",
            }
        elif self._db_down_since is not None:
            body |= {
                "status": "degraded",
                "problem": f"the database has not answered for {time.monotonic() - self._db_down_since:.0f} s "
                f"({self._db_problem}): serving cached keys and routes; usage waits in the spool",
            }
        if self.spool is None:
            body["spool"] = "off: the spool folder cannot be written; usage is kept in memory only"
        await respond(send, 200 if self._connected else 503, orjson.dumps(body))

    async def _health(self, send: Send) -> None:
        healthy, age = self._healthy()
        body: dict[str, object] = {
            "status": "ok" if healthy else "degraded",
            "ready_models": len(self.table.routes),
            "state_age_s": round(age, 3),
        }
        if not healthy:
            body["problem"] = "the database has not answered recently; routes may be stale"
        body["limits"] = await self.limiter.health()
        if self.controller_report is not None:
            body["controller"] = self.controller_report()
        await respond(send, 200 if healthy else 503, orjson.dumps(body))


class _AfterWake:
    """The ``send`` of a request that was held while its deployment woke: marks its first token, and for a stream
    whose response began before the wake, drops the second start and turns an error body into an SSE event."""

    def __init__(self, send: Send, *, streamed: bool, first: Callable[[], None]) -> None:
        self.send, self.streamed, self.first = send, streamed, first
        self.status = 200
        self.seen = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.streamed:
                return
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body and not self.seen:
                self.seen = True
                self.first()
            if self.streamed and self.status != 200 and body:
                message = {**message, "body": b"data: " + body + b"\n\n"}
        await self.send(message)
