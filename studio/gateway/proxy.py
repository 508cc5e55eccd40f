"""One proxied request: a replica picked (another tried if it refuses the connection), the answer relayed
(streamed or not, errors shaped as OpenAI's), the usage metered once, the timings recorded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp
import orjson

from studio.db import utcnow
from studio.gateway.budgeting import BudgetBook
from studio.gateway.counters import Lease
from studio.gateway.counting import TokenCounter
from studio.gateway.metrics import GatewayMetrics
from studio.gateway.protocol import (
    DONE,
    FanIn,
    StreamMeter,
    error_body,
    estimate_prompt_tokens,
    merge_choices,
    rename_model,
    split_events,
    upstream_error,
    usage_of,
)
from studio.gateway.responses import ResponseStream, from_chat
from studio.gateway.routes import RouteTable
from studio.prices import FREE, MICROS, Price
from studio.runtimes import upstream_key
from studio.services.keys import KeyIdentity
from studio.values import Route

if TYPE_CHECKING:
    from studio.gateway.limiting import Limiter

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = (b"content-type", b"application/json")


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
    model_version: int | None = None  # which version answered: a deployment with a canary serves two
    cost_micros: int = 0  # at the price the gateway held when it served the request (0 when not billed)
    request_id: str | None = None  # the gateway's id of the request: its usage row is written once (``spool``)


@dataclass
class Upstream:
    """What every proxied request shares with the gateway: the HTTP client, the routes and their load, the
    metrics, and the buffer of metered requests the gateway writes to the database."""

    table: RouteTable
    metrics: GatewayMetrics
    client: aiohttp.ClientSession | None = None
    # a new connection for each request: where a request whose connection broke before any answer is retried
    fresh: aiohttp.ClientSession | None = None
    metered: list[Metered] = field(default_factory=list)
    streams: dict[int, set[Proxy]] = field(default_factory=dict)  # open streams by API key id, to cut on revocation
    # open streams with a request id (spooled), checkpointed while they last: see ``spool``
    spooled_streams: set[Proxy] = field(default_factory=set)
    deadline_s: float | None = None  # the longest a whole request may take (None: no limit but the per-read one)
    secret: str = ""  # the studio's key: each deployment's model servers ask for a key derived from it
    counter: TokenCounter = field(default_factory=TokenCounter)  # for what runtimes do not report
    counting: set[asyncio.Task[None]] = field(default_factory=set)  # records waiting for their token counts
    limiter: Limiter | None = None  # settles each admitted request's rate-limit reservation when it ends
    prices: dict[str, Price] = field(default_factory=dict)  # deployment → price, refreshed with the routes
    currency: str = "USD"
    budgets: BudgetBook | None = None  # adds each billed request's spend to its owner's and groups' budgets
    # where a metered request goes first (the gateway's usage spool): False when it could not keep it, and the
    # record waits in ``metered`` instead
    keep: Callable[[Metered], bool] = lambda _: False
    _headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def headers_for(self, deployment: str) -> dict[str, str]:
        """The headers of a request to ``deployment``'s model servers, with the key only the gateway holds."""
        headers = self._headers.get(deployment)
        if headers is None:
            headers = {"content-type": "application/json"}
            if self.secret:
                headers["authorization"] = f"Bearer {upstream_key(self.secret, deployment)}"
            self._headers[deployment] = headers
        return headers


async def respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


async def fan_in(responses: list[aiohttp.ClientResponse]) -> AsyncIterator[bytes]:
    """The streams of copies of one request as one stream (``FanIn``), in the order their bytes arrive. A copy that
    breaks off raises here, as one stream would."""
    merger = FanIn()
    queue: asyncio.Queue[tuple[int, bytes | BaseException | None]] = asyncio.Queue()

    async def pump(copy: int, response: aiohttp.ClientResponse) -> None:
        try:
            async for chunk in response.content.iter_any():
                await queue.put((copy, chunk))
        except (aiohttp.ClientError, TimeoutError) as exc:
            await queue.put((copy, exc))
        await queue.put((copy, None))

    pumps = [asyncio.ensure_future(pump(i, r)) for i, r in enumerate(responses)]
    rests = [b""] * len(responses)
    open_copies = len(responses)
    try:
        while open_copies:
            copy, item = await queue.get()
            if item is None:
                open_copies -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            events, rests[copy] = split_events(rests[copy] + item)
            out = merger.feed(copy, events)
            if out:
                yield out
        yield merger.finish()
    finally:
        for task in pumps:
            task.cancel()


def ms(seconds: float) -> bytes:
    return f"{seconds * 1000:.3f}".encode()


class _Sent:
    """A request's ``send``, noting whether the response has begun and ended (what a request past its deadline can
    still be told)."""

    __slots__ = ("ended", "send", "started")

    def __init__(self, send: Send) -> None:
        self.send, self.started, self.ended = send, False, False

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        elif not message.get("more_body", False):
            self.ended = True
        await self.send(message)


class Proxy:
    """One proxied request: picks a replica (retrying another on a refused connection), relays the answer,
    meters it once, and measures it."""

    def __init__(
        self,
        up: Upstream,
        route: Route,
        endpoint: str,
        stream: bool,
        wants_usage: bool,
        identity: KeyIdentity | None,
        started: float,
        body: dict[str, Any],
        payload: bytes | list[bytes],
        raw_path: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        lease: Lease | None = None,
        answer_as_response: dict[str, Any] | None = None,
        request_id: str | None = None,
        admitted_prompt_tokens: int = 0,
    ) -> None:
        self.request_id = request_id
        # the prompt tokens it was admitted (and spooled) with, priced in its checkpoints
        self.admitted_prompt_tokens = admitted_prompt_tokens
        self.sent_tokens = 0  # completion tokens relayed to the client so far (reported, else one per content chunk)
        self.up, self.route, self.endpoint, self.stream = up, route, endpoint, stream
        self.wants_usage, self.identity, self.started = wants_usage, identity, started
        # several payloads: copies of one request whose answers are merged (``n`` fanned out for the runtime)
        self.payloads = payload if isinstance(payload, list) else [payload]
        self.body, self.path = body, raw_path.decode()
        # a Responses API request sent to the runtime as a chat completion: its answer is turned back into a Response
        self.answer_as_response = answer_as_response
        self.headers = headers or []  # what the client is told of fields its runtime was not sent as asked
        self.lease = lease  # its hold on the rate limits that apply, settled when it ends
        self.text = ""  # the answer's text, kept only when the runtime reported no usage: to count it
        self.itl: list[float] = []  # gaps between content chunks
        self.status = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.estimated = False
        self.ttft: float | None = None
        self.upstream_s = 0.0  # time spent waiting on the runtime
        self.cut_reason = ""  # why the gateway ended this stream (its key was revoked or expired)
        self._responses: list[aiohttp.ClientResponse] = []

    def reached(self) -> dict[str, int]:
        """What this open stream has sent so far, priced: its spool checkpoint."""
        price = self.up.prices.get(self.route.name, FREE)
        return {
            "completion_tokens": self.sent_tokens,
            "cost_micros": price.cost(self.admitted_prompt_tokens, self.sent_tokens),
        }

    def cut(self, reason: str) -> None:
        """End this stream now: the client gets an error event saying ``reason``, the runtime a closed connection."""
        self.cut_reason = reason
        for response in self._responses:
            response.close()

    async def run(self, receive: Receive, send: Send) -> None:
        """Relay the request within ``up.deadline_s``: past it the client gets 504 in OpenAI's shape (a stream already
        begun ends with an error event) and the model server a closed connection."""
        up, name = self.up, self.route.name
        up.metrics.inflight.labels(name).inc()
        sent = _Sent(send)
        try:
            async with asyncio.timeout(up.deadline_s):
                await self._relay(receive, sent)
        except TimeoutError:
            if not sent.ended:
                up.metrics.upstream_errors.labels(name, "deadline").inc()
                message = f"the model server did not finish within {up.deadline_s:g} s; retry the request"
                if sent.started:
                    await self._end_stream(sent, 504, message, "timeout")
                else:
                    await self._fail(sent, 504, message, "timeout")
        finally:
            up.metrics.inflight.labels(name).dec()
            self._record()

    async def _relay(self, receive: Receive, send: Send) -> None:
        up, name = self.up, self.route.name
        tried: set[str] = set()
        while True:
            target = up.table.pick(self.route, time.monotonic(), exclude=frozenset(tried))
            if target is None:
                await self._fail(
                    send,
                    502 if tried else 503,
                    f"no replica of {name!r} could be reached; retry shortly",
                    "upstream_error" if tried else "service_unavailable",
                )
                return
            tried.add(target)
            up.table.begin(name, target)
            try:
                if await self._attempt(target, receive, send):
                    return
            finally:
                up.table.end(name, target)

    async def _attempt(self, target: str, receive: Receive, send: Send, *, again: bool = False) -> bool:
        """Relay via ``target``; False when it refused the connection and another replica may be tried.

        A request whose connection broke before any answer came (a kept-alive connection the model server closed as
        the request went out, or a connect that timed out while a burst of them was under way) is sent once more, on
        a new connection (``again``): the runtime never answered it, and a client would otherwise get 502 or 504 for
        the gateway's own connection handling."""
        up = self.up
        client = up.fresh if again else up.client
        assert client is not None
        sent_at = time.perf_counter()
        headers = self._upstream_headers()
        posts = [asyncio.ensure_future(client.post(target + self.path, data=p, headers=headers)) for p in self.payloads]
        try:
            responses = list(await asyncio.gather(*posts))
        except aiohttp.ClientConnectorError:
            self._let_go(posts)
            up.table.mark_down(target, time.monotonic())
            up.metrics.upstream_errors.labels(self.route.name, "connect").inc()
            return False
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ConnectionTimeoutError) as exc:
            self._let_go(posts)
            if not again and up.fresh is not None:
                up.metrics.upstream_errors.labels(self.route.name, "retried").inc()
                log.info("%s: %s before an answer; sent again on a new connection", self.route.name, exc)
                return await self._attempt(target, receive, send, again=True)
            timed_out = isinstance(exc, TimeoutError)
            up.metrics.upstream_errors.labels(self.route.name, "timeout" if timed_out else "connect").inc()
            if timed_out:
                await self._fail(send, 504, "the model server did not answer in time", "timeout")
            else:
                await self._fail(send, 502, f"the model server failed: {exc}", "upstream_error")
            return True
        except TimeoutError:
            self._let_go(posts)
            up.metrics.upstream_errors.labels(self.route.name, "timeout").inc()
            await self._fail(send, 504, "the model server did not answer in time", "timeout")
            return True
        except aiohttp.ClientError as exc:
            self._let_go(posts)
            up.metrics.upstream_errors.labels(self.route.name, "connect").inc()
            await self._fail(send, 502, f"the model server failed: {exc}", "upstream_error")
            return True
        try:
            failed = next((r for r in responses if r.status != 200), None)
            if failed is not None:  # one copy's error is the answer; the other copies are let go
                await self._relay_body([failed], sent_at, send)
            elif self.stream:
                await self._relay_stream(responses, sent_at, receive, send)
            else:
                await self._relay_body(responses, sent_at, send)
        finally:
            for response in responses:
                response.release()
        return True

    def _upstream_headers(self) -> dict[str, str]:
        """The headers sent to the model server (shared by requests to one deployment: never changed in place)."""
        return self.up.headers_for(self.route.deployment or self.route.name)

    @staticmethod
    def _let_go(posts: Sequence[asyncio.Future[aiohttp.ClientResponse]]) -> None:
        """Release the copies that were answered when another failed, and stop those still waiting."""
        for post in posts:
            if not post.done():
                post.cancel()
            elif not post.cancelled() and post.exception() is None:
                post.result().release()

    async def _relay_body(self, responses: list[aiohttp.ClientResponse], sent_at: float, send: Send) -> None:
        response = responses[0]
        try:
            bodies = [await r.read() for r in responses]
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.up.metrics.upstream_errors.labels(self.route.name, "broken_stream").inc()
            await self._fail(send, 502, f"the model server stopped answering: {exc}", "upstream_error")
            return
        self.upstream_s = time.perf_counter() - sent_at
        self.status = response.status
        data = bodies[0]
        if response.status == 200:
            try:
                obj = orjson.loads(data) if len(bodies) == 1 else merge_choices([orjson.loads(b) for b in bodies])
                counted = usage_of(obj)
                if counted is None:
                    self.text = "".join(
                        (c.get("message") or {}).get("content") or c.get("text") or "" for c in obj.get("choices") or []
                    )
                    counted, self.estimated = (estimate_prompt_tokens(self.body), (len(self.text) + 3) // 4), True
                self.prompt_tokens, self.completion_tokens = counted
                rename_model(obj, self.route.name)
                if self.answer_as_response is not None:
                    obj = from_chat(obj, self.answer_as_response)
                data = orjson.dumps(obj)
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                pass  # not JSON we understand: relay as it is
        else:
            data = upstream_error(response.status, data)
        overhead = time.perf_counter() - self.started - self.upstream_s
        await respond(send, response.status, data, [(b"x-cove-overhead-ms", ms(overhead)), *self.headers])
        self.up.metrics.overhead.observe(overhead)

    async def _relay_stream(
        self, responses: list[aiohttp.ClientResponse], sent_at: float, receive: Receive, send: Send
    ) -> None:
        meter = StreamMeter(self.route.name, self.wants_usage)
        reshape = None if self.answer_as_response is None else ResponseStream(self.answer_as_response)
        overhead = sent_at - self.started  # what the gateway did before the runtime was asked
        self.status = 200
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-cove-overhead-ms", ms(overhead)),
                    *self.headers,
                ],
            }
        )
        self.up.metrics.overhead.observe(overhead)
        if reshape is not None:
            await send({"type": "http.response.body", "body": reshape.start(), "more_body": True})
        gone = asyncio.ensure_future(receive())  # completes with http.disconnect if the client leaves

        # A client that leaves ends the runtime's answer too, even one that sends nothing more: the request's tokens
        # and its rate-limit slot are settled now, not when the runtime next writes.
        def hang_up(left: asyncio.Future[Any]) -> None:
            if not left.cancelled():
                for response in responses:
                    response.close()

        gone.add_done_callback(hang_up)
        rest = b""
        key_id = self.identity.id if self.identity else None
        if key_id is not None:
            self._responses = responses
            self.up.streams.setdefault(key_id, set()).add(self)
        if self.request_id is not None:
            self.up.spooled_streams.add(self)
        last_at = 0.0  # when the last content chunk was relayed
        try:
            async for chunk in responses[0].content.iter_any() if len(responses) == 1 else fan_in(responses):
                if gone.done():
                    self.status = 499
                    return
                if self.cut_reason:
                    break
                events, rest = split_events(rest + chunk)
                before = meter.content_chunks
                # one write per read from the runtime, however many events it carried
                out = b"".join(o for o in map(meter.process, events) if o is not None)
                if reshape is not None and out:
                    out = b"".join(map(reshape.feed, split_events(out)[0]))
                if out:
                    new = meter.content_chunks - before
                    if new:
                        now = time.perf_counter()
                        if self.ttft is None:
                            self.ttft, new = now - self.started, new - 1
                        elif new:
                            self.itl.append(now - last_at)
                            new -= 1
                        if new:  # chunks relayed in one write reach the client together
                            self.itl.extend([0.0] * new)
                        last_at = now
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                    # counted once sent: a checkpoint never bills what the client did not get
                    self.sent_tokens = meter.completion_tokens if meter.reported else meter.content_chunks
            if self.cut_reason:
                await self._end_stream(send, 401, self.cut_reason, "invalid_request_error")
                return
            if gone.done():  # the client left while the runtime finished
                self.status = 499
                return
            if reshape is not None:
                await send({"type": "http.response.body", "body": reshape.finish(), "more_body": True})
            elif not meter.done and self.endpoint != "responses":  # Responses streams end without [DONE]
                await send({"type": "http.response.body", "body": DONE, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except (aiohttp.ClientError, TimeoutError) as exc:
            if gone.done() and not gone.cancelled():  # the client left: there is nobody to tell
                self.status = 499
                return
            if self.cut_reason:
                await self._end_stream(send, 401, self.cut_reason, "invalid_request_error")
                return
            self.status = 502
            self.up.metrics.upstream_errors.labels(self.route.name, "broken_stream").inc()
            log.warning("%s: stream broke after %d chunks: %s", self.route.name, meter.content_chunks, exc)
            message = (
                f"the model server stopped mid-stream after {meter.content_chunks} chunks "
                f"({type(exc).__name__}); retry the request"
            )
            await self._end_stream(send, 502, message, "upstream_error")
        finally:
            self.up.spooled_streams.discard(self)
            if key_id is not None:
                calls = self.up.streams.get(key_id, set())
                calls.discard(self)
                if not calls:
                    self.up.streams.pop(key_id, None)
            gone.cancel()
            self.upstream_s = time.perf_counter() - sent_at
            if meter.reported:
                self.prompt_tokens, self.completion_tokens = meter.prompt_tokens, meter.completion_tokens
            else:
                self.prompt_tokens, self.completion_tokens = estimate_prompt_tokens(self.body), meter.content_chunks
                self.estimated = True
                self.text = "".join(meter.texts)

    async def _end_stream(self, send: Send, status: int, message: str, kind: str) -> None:
        """End a stream already begun (status 200 sent) with an error event, as OpenAI's streams do."""
        self.status = status
        event = b"data: " + error_body(message, type=kind, code=status) + b"\n\n"
        await send({"type": "http.response.body", "more_body": True, "body": event})
        await send({"type": "http.response.body", "body": b""})

    async def _fail(self, send: Send, status: int, message: str, kind: str) -> None:
        self.status = status
        await respond(send, status, error_body(message, type=kind, code=status), self.headers)

    def _record(self) -> None:
        """Measure the request; meter it now, or once its tokens are counted (when the runtime did not report them
        and the deployment's tokenizer may count them: off the request's path, on a task)."""
        elapsed = time.perf_counter() - self.started
        if self.lease is not None and self.up.limiter is not None:  # estimates, when the runtime reported none
            self.up.limiter.settle(self.lease, self.prompt_tokens + self.completion_tokens)
        m, labels = self.up.metrics, (self.route.name,)
        version = str(self.route.model_version or "")
        m.requests.labels(self.route.name, self.endpoint, str(self.status), version).inc()
        m.latency.observe((self.route.name, self.endpoint, version), elapsed)
        if self.ttft is not None:
            m.ttft.observe(labels, self.ttft)
            if self.itl:
                m.itl.observe_many(labels, self.itl)
        if self.estimated and self.route.model_path and (self.status in (200, 499)):
            task = asyncio.ensure_future(self._count_then_meter(elapsed))
            self.up.counting.add(task)
            task.add_done_callback(self.up.counting.discard)
        else:
            self._meter(elapsed)

    async def _count_then_meter(self, elapsed: float) -> None:
        counted = None
        try:
            counted = await self.up.counter.count(self.route.name, self.route.model_path, self.body, self.text)
        except Exception:  # a tokenizer's own bug: the request is still metered, with the estimate
            log.exception("%s: counting a request's tokens failed", self.route.name)
        self.text = ""
        if counted is not None:
            self.prompt_tokens, self.completion_tokens = counted
            self.estimated = False
        self._meter(elapsed)

    def _meter(self, elapsed: float) -> None:
        name, m = self.route.name, self.up.metrics
        if self.prompt_tokens:
            m.tokens.labels(name, "prompt").inc(self.prompt_tokens)
        if self.completion_tokens:
            m.tokens.labels(name, "completion").inc(self.completion_tokens)
        if self.ttft is not None and self.completion_tokens > 1 and self.status == 200:
            m.tpot.observe((name,), (elapsed - self.ttft) / (self.completion_tokens - 1))
        cost = 0
        if self.status < 400 or self.status == 499:  # billed as usage counts them: served, or cut by the client
            cost = self.up.prices.get(name, FREE).cost(self.prompt_tokens, self.completion_tokens)
            if cost:
                m.cost.labels(name, self.up.currency).inc(cost / MICROS)
            if self.identity is not None and self.up.budgets is not None:
                tokens = self.prompt_tokens + self.completion_tokens
                self.up.budgets.add(self.identity.owner, self.identity.groups, tokens, cost)
        metered = Metered(
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
            self.route.model_version or None,
            cost,
            self.request_id,
        )
        if not self.up.keep(metered):
            self.up.metered.append(metered)
