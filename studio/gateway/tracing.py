"""OpenTelemetry traces of the gateway's requests, sent over OTLP/HTTP; off unless ``otlp_endpoint`` is set.

One request's trace (span names as an operator searches for them)::

    POST /v1/chat/completions          SERVER: route, deployment, API key id and name (never the key), HTTP status,
    │                                  Cove's status, tokens, time to first token, the request id (x-request-id)
    ├─ admit limits · check budget · wake    the admission steps that can wait (rate-limit store, scale from zero)
    ├─ upstream                        CLIENT, one per replica tried: its address, status, a "first token" event; the
    │                                  model server gets a W3C ``traceparent`` (vLLM and SGLang continue the trace)
    └─ usage spool                     the request's usage record appended to the spool (durable from here)

and each batched write of the spool to the database is a trace of its own (``usage flush``). A request that arrives
with a ``traceparent`` continues its caller's trace.

Off, nothing of OpenTelemetry's SDK is imported, no exporter thread runs, and a request allocates nothing for traces:
the gateway holds ``tracing = None`` and every hook is one ``is None`` test (``step`` hands back one shared
``nullcontext``). The SDK and the exporter are optional packages (``opentelemetry-sdk``,
``opentelemetry-exporter-otlp-proto-http``): with an endpoint set and them missing, the gateway says so and serves
without traces.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from studio import __version__
from studio.gateway.proxy import Proxy, Receive, Scope, Send
from studio.settings import Settings

log = logging.getLogger(__name__)

OFF: AbstractContextManager[None] = contextlib.nullcontext()  # reusable: what every step is when traces are off
TRACED_HEADERS = (b"traceparent", b"tracestate")

Handler = Callable[[Scope, Receive, Send, str], Awaitable[None]]
Attributes = Mapping[str, str | bool | int | float]


class Tracing:
    """The gateway's tracer: a provider with a batching OTLP/HTTP exporter, sampled by trace id (a caller's sampled
    ``traceparent`` is always followed). Build it with ``start``; ``close`` sends what is left."""

    def __init__(self, *, endpoint: str, service: str, ratio: float) -> None:
        # imported here: the SDK and the exporter are needed (and installed) only where traces are on
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        self.endpoint = endpoint.rstrip("/") + "/v1/traces"
        # not installed as the process's global provider: the gateway passes its own tracer to whoever traces
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service, "service.version": __version__}),
            sampler=ParentBased(TraceIdRatioBased(ratio)),
        )
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=self.endpoint)))
        self.tracer = self.provider.get_tracer("studio.gateway", __version__)
        self.propagator = TraceContextTextMapPropagator()

    @classmethod
    def start(cls, settings: Settings) -> Tracing | None:
        """The tracer ``settings`` ask for, or None: no endpoint, or the optional packages are not installed
        (logged: the gateway serves without traces rather than not at all)."""
        if not settings.otlp_endpoint:
            return None
        try:
            tracing = cls(
                endpoint=settings.otlp_endpoint, service=settings.otel_service_name, ratio=settings.trace_sample_ratio
            )
        except ImportError as exc:
            log.error(
                "traces are asked for (COVE_OTLP_ENDPOINT=%s) but %s is not installed: serving without traces; "
                "install opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http",
                settings.otlp_endpoint,
                exc.name,
            )
            return None
        log.info("traces go to %s (sampled: %g)", tracing.endpoint, settings.trace_sample_ratio)
        return tracing

    def close(self) -> None:
        """Send the spans still queued (a few seconds at most) and stop the exporter."""
        self.provider.shutdown()

    async def request(self, handle: Handler, scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
        """Run ``handle`` (the gateway's proxying of one request) inside the request's SERVER span, which records
        the HTTP status it answered with."""
        path = scope["raw_path"].split(b"?", 1)[0].decode(errors="replace")
        carrier = {name.decode(): value.decode("latin-1") for name, value in scope["headers"] if name in TRACED_HEADERS}
        parent = self.propagator.extract(carrier) if carrier else None
        attributes = {"http.request.method": "POST", "http.route": path, "cove.endpoint": endpoint}
        with self.tracer.start_as_current_span(
            f"POST {path}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:

            async def answered(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR, f"answered {status}"))
                await send(message)

            await handle(scope, receive, answered, endpoint)

    @staticmethod
    def annotate(deployment: str, key_id: int | None, key_name: str | None) -> None:
        """Name the deployment and the API key (its id and name, never the key) on the current request's span."""
        span = trace.get_current_span()
        span.set_attribute("cove.deployment", deployment)
        if key_id is not None and key_name is not None:
            span.set_attributes({"cove.api_key.id": key_id, "cove.api_key.name": key_name})

    def proxy(self, *args: Any, **kwargs: Any) -> Proxy:
        """A ``Proxy`` (same arguments) whose upstream calls and usage write are spans of the current request."""
        return TracedProxy(*args, tracing=self, **kwargs)


def step(tracing: Tracing | None, name: str, attributes: Attributes | None = None) -> AbstractContextManager[Any]:
    """A span around one step of the current request (``OFF`` when traces are off). A step that raises (a
    refusal) ends with its span's status set to error and the reason as its description."""
    if tracing is None:
        return OFF
    return tracing.tracer.start_as_current_span(name, attributes=attributes, record_exception=False)


class TracedProxy(Proxy):
    """A proxied request whose replica attempts are ``upstream`` spans (the ``traceparent`` the model server gets
    names them) and whose usage record is a ``usage spool`` span; it adds what it learned to the request's span."""

    def __init__(self, *args: Any, tracing: Tracing, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracing = tracing
        self.context = otel_context.get_current()  # the request's: a record metered later (its tokens counted) joins
        self.span = trace.get_current_span()
        # the wall clock at ``started`` (a perf_counter reading), to time events measured against it
        self.started_ns = time.time_ns() - int((time.perf_counter() - self.started) * 1e9)
        if self.request_id:
            self.span.set_attribute("cove.request_id", self.request_id)

    async def run(self, receive: Receive, send: Send) -> None:
        try:
            await super().run(receive, send)
        finally:
            self.span.set_attributes(
                {
                    "cove.status": self.status,  # what usage records: a stream cut at 502 was sent as 200
                    "cove.stream": self.stream,
                    "gen_ai.usage.input_tokens": self.prompt_tokens,
                    "gen_ai.usage.output_tokens": self.completion_tokens,
                    "cove.usage.estimated": self.estimated,
                }
            )
            if self.ttft is not None:
                self.span.set_attribute("cove.ttft_ms", round(self.ttft * 1000, 3))
            if self.status >= 500:
                self.span.set_status(Status(StatusCode.ERROR, f"status {self.status}"))

    def _upstream_headers(self) -> dict[str, str]:
        headers = dict(super()._upstream_headers())  # a copy: the base headers are shared by every request
        self.tracing.propagator.inject(headers)  # the current span: this attempt's
        return headers

    async def _attempt(self, target: str, receive: Receive, send: Send, *, again: bool = False) -> bool:
        attributes = {"server.address": target, "url.full": target + self.path, "cove.deployment": self.route.name}
        if again:  # sent again on a new connection: its connection broke before any answer (a span in the first's)
            attributes["cove.again"] = "new connection"
        with self.tracing.tracer.start_as_current_span("upstream", kind=SpanKind.CLIENT, attributes=attributes) as span:
            done = await super()._attempt(target, receive, send, again=again)
            if not done:
                span.set_status(Status(StatusCode.ERROR, "the replica refused the connection: another is tried"))
                return False
            span.set_attribute("http.response.status_code", self.status)
            if self.status >= 500:
                span.set_status(Status(StatusCode.ERROR, f"status {self.status}"))
            if self.ttft is not None:
                at = self.started_ns + int(self.ttft * 1e9)
                span.add_event("first token", {"cove.ttft_ms": round(self.ttft * 1000, 3)}, timestamp=at)
            return True

    def _meter(self, elapsed: float) -> None:
        with self.tracing.tracer.start_as_current_span("usage spool", context=self.context) as span:
            held = len(self.up.metered)
            super()._meter(elapsed)
            span.set_attributes(
                {
                    "cove.request_id": self.request_id or "",
                    "gen_ai.usage.input_tokens": self.prompt_tokens,
                    "gen_ai.usage.output_tokens": self.completion_tokens,
                    # memory: the spool could not append it; it waits for the next flush in memory only
                    "cove.usage.kept_in": "memory" if len(self.up.metered) > held else "spool",
                }
            )
