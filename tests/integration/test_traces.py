"""OpenTelemetry traces, on real processes: ``python -m studio.gateway`` exports to an OTLP/HTTP receiver in the test
(its protobuf decoded with opentelemetry-proto's classes), in front of a model server that records the
``traceparent`` it is sent. One trace per request: the gateway's span, the upstream call the model server saw as its
parent, the usage write; the key itself nowhere. Off (no endpoint): no traceparent, no exporter."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from studio.bootstrap import open_studio
from studio.services import keys
from tests.conftest import make_settings
from tests.integration.conftest import wait_until
from tests.integration.test_metering_faults import CHAT, GatewayProcess, _serve_chat

pytestmark = pytest.mark.runtime


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    events: list[str]
    service: str


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") else None


class OtlpReceiver:
    """An OTLP/HTTP collector: ``POST /v1/traces`` with an ExportTraceServiceRequest; keeps the spans and the raw
    bodies (to look for what must never be sent)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.path == "/v1/traces", self.path
                receiver.bodies.append(body)
                receiver.spans.extend(_spans(ExportTraceServiceRequest.FromString(body)))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, name: str) -> list[Span]:
        return [s for s in list(self.spans) if s.name == name]


def _spans(request: ExportTraceServiceRequest) -> Iterator[Span]:
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                yield Span(
                    name=s.name,
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    parent_id=s.parent_span_id.hex(),
                    kind=s.kind,
                    attributes={a.key: _value(a.value) for a in s.attributes},
                    events=[e.name for e in s.events],
                    service=resource["service.name"],
                )


class RecordingRuntime:
    """A model server answering every chat with "hello there" (streamed or not, usage 7 + 2), recording the
    ``traceparent`` header of each request (None when it got none)."""

    def __init__(self) -> None:
        self.traceparents: list[str | None] = []
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._send(b'{"status": "ok"}', "application/json")

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["content-length"])))
                runtime.traceparents.append(self.headers.get("traceparent"))
                usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
                base = {"id": "x", "created": 1, "model": request["model"]}
                if not request.get("stream"):
                    message = {"role": "assistant", "content": "hello there"}
                    answer = {**base, "object": "chat.completion", "usage": usage}
                    answer["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
                    self._send(json.dumps(answer).encode(), "application/json")
                    return
                events = [
                    {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w}}]}
                    for w in ("hello", " there")
                ]
                events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
                body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
                self._send(body, "text/event-stream")

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@dataclass(frozen=True)
class Served:
    database_url: str
    key: str
    key_id: int


@pytest.fixture
def runtime() -> Iterator[RecordingRuntime]:
    runtime = RecordingRuntime()
    yield runtime
    runtime.server.shutdown()
    runtime.server.server_close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def served(tmp_path: Path, runtime: RecordingRuntime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A deployment 'chat' Ready at the recording runtime, and a key for it."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "COVE_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)  # the gateway processes inherit the environment
    url = f"sqlite:///{tmp_path / 'cove.db'}"
    db = open_studio(make_settings(tmp_path / "studio", database_url=url))
    key = _serve_chat(db, tmp_path, runtime.url)
    key_id = next(identity.id for identity in keys.active_keys(db=db).values() if identity.name == "app")
    yield Served(url, key, key_id)
    db.dispose()


def _chat(url: str, key: str, *, stream: bool, headers: dict[str, str] | None = None) -> str:
    reply = httpx.post(
        url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", **(headers or {})},
        json={**CHAT, "stream": stream},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert "hello" in reply.text
    return reply.headers["x-request-id"]


def test_a_request_is_one_trace_from_the_gateway_through_the_model_server_to_the_usage_write(
    tmp_path: Path, served: Served, runtime: RecordingRuntime, receiver: OtlpReceiver
) -> None:
    url, key = served.database_url, served.key
    gateway = GatewayProcess(
        make_settings(tmp_path / "home"),
        url,
        COVE_OTLP_ENDPOINT=receiver.url,
        COVE_OTEL_SERVICE_NAME="cove-test",
        OTEL_BSP_SCHEDULE_DELAY="100",  # the SDK's batch interval (5 s by default)
    )
    try:
        plain = _chat(gateway.url, key, stream=False)
        streamed = _chat(gateway.url, key, stream=True)
        caller = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"  # a caller's own trace, which the gateway continues
        continued = _chat(gateway.url, key, stream=False, headers={"traceparent": caller})

        def requests() -> dict[str, Span]:
            spans = {s.attributes.get("cove.request_id"): s for s in receiver.named("POST /v1/chat/completions")}
            return spans if {plain, streamed, continued} <= set(spans) else {}

        by_id = wait_until(requests, timeout=30, what="the three requests' spans")
        wait_until(lambda: len(receiver.named("usage spool")) >= 3, timeout=30, what="the usage spool spans")
        wait_until(lambda: receiver.named("usage flush"), timeout=30, what="a usage flush span")
    finally:
        gateway.stop()

    upstreams = {s.parent_id: s for s in receiver.named("upstream")}
    spools = {s.parent_id: s for s in receiver.named("usage spool")}
    assert runtime.traceparents[0] is not None
    for request_id, stream in ((plain, False), (streamed, True), (continued, False)):
        span = by_id[request_id]
        assert span.service == "cove-test"
        assert span.kind == 2  # SERVER
        attrs = span.attributes
        assert attrs["http.route"] == "/v1/chat/completions"
        assert attrs["http.response.status_code"] == 200
        assert attrs["cove.status"] == 200
        assert attrs["cove.deployment"] == "chat"
        assert attrs["cove.api_key.name"] == "app"
        assert attrs["cove.api_key.id"] == served.key_id
        assert attrs["cove.stream"] is stream
        assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (7, 2)
        upstream = upstreams[span.span_id]  # the model server call is the request span's child, in its trace
        assert (upstream.trace_id, upstream.kind) == (span.trace_id, 3)  # CLIENT
        assert upstream.attributes["http.response.status_code"] == 200
        assert upstream.attributes["server.address"] == runtime.url
        # the model server was told this very span is its parent, sampled (flags: bit 1 says the id is random)
        told = {t[: -len("-01")]: int(t[-2:], 16) for t in runtime.traceparents if t}
        assert told[f"00-{span.trace_id}-{upstream.span_id}"] & 1
        assert ("first token" in upstream.events) is stream
        spool = spools[span.span_id]
        assert spool.trace_id == span.trace_id
        assert spool.attributes["cove.request_id"] == request_id
        assert spool.attributes["cove.usage.kept_in"] == "spool"
    assert by_id[continued].trace_id == "ab" * 16
    assert by_id[continued].parent_id == "cd" * 8
    assert by_id[plain].trace_id != by_id[streamed].trace_id
    flush = receiver.named("usage flush")[0]
    assert flush.parent_id == ""  # a trace of its own: one write carries many requests
    everything = b"".join(receiver.bodies)
    assert key.encode() not in everything
    assert key.split("_", 1)[-1][-16:].encode() not in everything


def test_with_traces_off_no_traceparent_is_sent_and_no_exporter_runs(
    tmp_path: Path, served: Served, runtime: RecordingRuntime
) -> None:
    url, key = served.database_url, served.key
    settings = make_settings(tmp_path / "home")
    gateway = GatewayProcess(settings, url)
    try:
        _chat(gateway.url, key, stream=False)
        _chat(gateway.url, key, stream=True)
    finally:
        gateway.stop()
    assert runtime.traceparents == [None, None]
    assert "traces go to" not in gateway.log.read_text()
