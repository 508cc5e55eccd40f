"""The OpenAI surface beyond chat, over real HTTP with the `openai` SDK: models.retrieve, parameters a runtime does
not honour (fanned out at the gateway, or refused by name), the Responses API (passed through or translated onto chat
completions) and embeddings. Each deployment is Ready (written as the controller would) at a fake runtime started
here that plays one runtime kind: one choice per request whatever ``n`` says, ``/v1/responses`` and
``/v1/embeddings`` as the test asks, and every body it received kept."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from studio.db import Database
from studio.models import ApiKeyCreate, ImageCreate
from studio.services import images, keys, usage
from studio.values import RuntimeKind
from tests.integration.conftest import GatewayServer, deploy, wait_until
from tests.integration.test_gateway import play_ready
from tests.people import ADMIN


class Runtime(ThreadingHTTPServer):
    """A model server that honours no ``n``: each chat answer is one choice, "answer N" for its Nth request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Runtime

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _events(self, events: list[Any]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for event in events:
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()
        self.close_connection = True

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.server.lock:
            self.server.bodies.append((self.path, body))
            nth = len(self.server.bodies)
        if self.path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(t)), 0.5]} for i, t in enumerate(inputs)
            ]
            tokens = {"prompt_tokens": 2 * len(inputs), "total_tokens": 2 * len(inputs)}
            self._json(200, {"object": "list", "model": body["model"], "data": data, "usage": tokens})
        elif self.path == "/v1/responses":
            self._responses(body)
        elif self.path == "/v1/chat/completions":
            self._chat(body, f"answer {nth}")
        else:
            self._json(404, {"detail": "Not Found"})

    def _chat(self, body: dict[str, Any], text: str) -> None:
        tokens = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        base = {"id": "c", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            self._json(200, {**base, "object": "chat.completion", "choices": [choice], "usage": tokens})
            return
        words = text.split(" ")
        chunks: list[Any] = [
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w}, "finish_reason": None}],
            }
            for i, w in enumerate(words)
        ]
        chunks.append(
            {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": tokens})
        self._events(chunks)

    def _responses(self, body: dict[str, Any]) -> None:
        tokens = {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}
        response = {
            "id": "resp_1",
            "object": "response",
            "created_at": 1,
            "model": body["model"],
            "status": "completed",
            "output": [
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "native hello", "annotations": []}],
                }
            ],
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
            "usage": tokens,
        }
        if not body.get("stream"):
            self._json(200, response)
            return
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        self._events(
            [
                {"type": "response.created", "sequence_number": 0, "response": started},
                {
                    "type": "response.output_text.delta",
                    "sequence_number": 1,
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": "native",
                    "logprobs": [],
                },
                {
                    "type": "response.output_text.delta",
                    "sequence_number": 2,
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": " hello",
                    "logprobs": [],
                },
                {"type": "response.completed", "sequence_number": 3, "response": response},
            ]
        )


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    server = Runtime()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def key(db: Database) -> str:
    return keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="surface")).key


def ready_on(db: Database, runtime: Runtime, name: str, model: str, kind: RuntimeKind) -> None:
    image = f"{kind.value}-image"
    if not any(i.name == image for i in images.list_images(db=db)):
        images.add_image(
            actor=ADMIN,
            db=db,
            data=ImageCreate(
                name=image, version="1", ref=f"example.com/{image}", runtime=kind, local_command=["x", "{port}"]
            ),
        )
    deploy(db, name, model, image)
    play_ready(db, name, [runtime.url])


def sdk(gateway: GatewayServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


@pytest.mark.runtime
def test_models_retrieve_answers_what_the_key_may_call_and_404_otherwise(
    db: Database, stub_model: str, gateway: GatewayServer, runtime: Runtime, key: str
) -> None:
    ready_on(db, runtime, "a", stub_model, RuntimeKind.VLLM)
    ready_on(db, runtime, "b", stub_model, RuntimeKind.VLLM)
    only_a = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="only-a", deployments=["a"])).key
    with sdk(gateway, key) as client:
        retrieved = client.models.retrieve("b")  # ready a moment ago: found before the gateway's next refresh
        assert retrieved == next(m for m in client.models.list() if m.id == "b")
        with pytest.raises(openai.NotFoundError, match="'nope' does not exist"):
            client.models.retrieve("nope")
    with sdk(gateway, only_a) as client:
        assert client.models.retrieve("a").id == "a"
        with pytest.raises(openai.NotFoundError) as refused:
            client.models.retrieve("b")  # as if it did not exist: a limited key learns nothing of the others
    assert refused.value.body == {
        "message": "the model 'b' does not exist or is not ready (see GET /v1/models)",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert httpx.get(gateway.url + "/v1/models/a").status_code == 401


def ask(client: openai.OpenAI, model: str, **fields: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], **fields)


@pytest.mark.runtime
def test_n_is_fanned_out_for_a_runtime_that_ignores_it_and_sent_to_one_that_honours_it(
    db: Database, stub_model: str, gateway: GatewayServer, runtime: Runtime, key: str
) -> None:
    ready_on(db, runtime, "cpu", stub_model, RuntimeKind.TRANSFORMERS)
    ready_on(db, runtime, "gpu", stub_model, RuntimeKind.VLLM)
    with sdk(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="cpu", messages=[{"role": "user", "content": "hi"}], n=2, seed=3
        )
        reply = raw.parse()
        assert raw.headers["x-cove-emulated-fields"] == "n"
        assert [c.index for c in reply.choices] == [0, 1]
        assert {c.message.content for c in reply.choices} == {"answer 1", "answer 2"}  # two requests, two answers
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (10, 4)
        sent = [body for _, body in runtime.bodies]
        assert sorted(b["seed"] for b in sent) == [3, 4]
        assert not any("n" in b for b in sent)

        texts: dict[int, str] = {}
        counted = None
        for chunk in ask(client, "cpu", n=2, stream=True, stream_options={"include_usage": True}):
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            counted = chunk.usage or counted
        assert sorted(texts) == [0, 1]
        assert sorted(texts.values()) == ["answer 3", "answer 4"]
        assert counted is not None
        assert (counted.prompt_tokens, counted.completion_tokens) == (10, 4)

        runtime.bodies.clear()
        assert len(ask(client, "gpu", n=2).choices) == 1  # vLLM honours n: sent once, as asked (this fake does not)
        assert [b["n"] for _, b in runtime.bodies] == [2]
    wait_until(lambda: len(usage.usage_records(db=db, deployment="cpu")) >= 2, what="cpu's usage rows")
    rows = usage.usage_records(db=db, deployment="cpu")
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [(10, 4), (10, 4)]  # once per client request


@pytest.mark.runtime
def test_parameters_a_runtime_would_ignore_are_refused_by_name_or_sent_where_honoured(
    db: Database, stub_model: str, gateway: GatewayServer, runtime: Runtime, key: str
) -> None:
    ready_on(db, runtime, "cpu", stub_model, RuntimeKind.TRANSFORMERS)
    ready_on(db, runtime, "gpu", stub_model, RuntimeKind.VLLM)
    asks: list[dict[str, Any]] = [
        {"logprobs": True, "top_logprobs": 2},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
    ]
    with sdk(gateway, key) as client:
        for fields in asks:
            with pytest.raises(openai.BadRequestError) as refused:
                ask(client, "cpu", **fields)
            param = next(iter(fields))
            assert refused.value.body["param"] == param  # type: ignore[index]
            assert f"'{param}' is not supported by this deployment's runtime (transformers)" in refused.value.message
            ask(client, "gpu", **fields)
            assert {k: runtime.bodies[-1][1][k] for k in fields} == fields
        assert not [b for _, b in runtime.bodies if b["model"] != "gpu"]  # nothing refused reached the runtime
        # values that ask for nothing are answered as asked
        assert ask(client, "cpu", n=1, logprobs=False, response_format={"type": "text"}).choices[0].index == 0


@pytest.mark.runtime
def test_responses_go_to_a_runtime_that_serves_them_and_are_translated_onto_chat_for_one_that_does_not(
    db: Database, stub_model: str, gateway: GatewayServer, runtime: Runtime, key: str
) -> None:
    ready_on(db, runtime, "native", stub_model, RuntimeKind.TRANSFORMERS)
    ready_on(db, runtime, "chatonly", stub_model, RuntimeKind.TRITON)
    with sdk(gateway, key) as client:
        reply = client.responses.create(model="native", input="hi")
        assert (reply.output_text, reply.model) == ("native hello", "native")
        assert runtime.bodies[-1][0] == "/v1/responses"
        assert runtime.bodies[-1][1]["stream"] is False  # `transformers serve` streams unless told not to
        events = list(client.responses.create(model="native", input="hi", stream=True))
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "native hello"
        assert events[-1].type == "response.completed"
        assert events[-1].response.model == "native"

        reply = client.responses.create(
            model="chatonly", instructions="be brief", input="hi", max_output_tokens=9, metadata={"k": "v"}
        )
        path, sent = runtime.bodies[-1]
        assert path == "/v1/chat/completions"
        assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
        assert sent["max_tokens"] == 9
        assert reply.output_text.startswith("answer ")
        assert (reply.model, reply.status, reply.metadata) == ("chatonly", "completed", {"k": "v"})
        assert (reply.usage.input_tokens, reply.usage.output_tokens) == (5, 2)
        events = list(client.responses.create(model="chatonly", input=[{"role": "user", "content": "hi"}], stream=True))
        kinds = [e.type for e in events]
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert kinds[-1] == "response.completed"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text.startswith("answer ")
        assert events[-1].response.output_text == text
        assert (events[-1].response.usage.input_tokens, events[-1].response.usage.output_tokens) == (5, 2)

        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="native", input="hi", text={"format": {"type": "json_object"}})
        assert "'text.format' is not supported by this deployment's runtime (transformers)" in refused.value.message
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="chatonly", input="hi", previous_response_id="resp_1")
        assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]
    wait_until(lambda: len(usage.usage_records(db=db, deployment="native")) >= 2, what="native's usage rows")
    wait_until(lambda: len(usage.usage_records(db=db, deployment="chatonly")) >= 2, what="chatonly's usage rows")
    rows = usage.usage_records(db=db, deployment="native") + usage.usage_records(db=db, deployment="chatonly")
    assert {(r.deployment, r.endpoint, r.stream, r.prompt_tokens, r.completion_tokens, r.estimated) for r in rows} == {
        ("native", "responses", False, 4, 2, False),
        ("native", "responses", True, 4, 2, False),
        ("chatonly", "responses", False, 5, 2, False),
        ("chatonly", "responses", True, 5, 2, False),
    }


@pytest.mark.runtime
def test_embeddings_are_routed_to_a_runtime_that_serves_them_and_refused_for_one_that_does_not(
    db: Database, stub_model: str, gateway: GatewayServer, runtime: Runtime, key: str
) -> None:
    ready_on(db, runtime, "embed", stub_model, RuntimeKind.VLLM)
    ready_on(db, runtime, "cpu", stub_model, RuntimeKind.TRANSFORMERS)
    with sdk(gateway, key) as client:
        reply = client.embeddings.create(model="embed", input=["a", "bcd"])
        assert [(d.index, d.embedding) for d in reply.data] == [(0, [1.0, 0.5]), (1, [3.0, 0.5])]
        assert (reply.model, reply.usage.prompt_tokens) == ("embed", 4)
        with pytest.raises(openai.BadRequestError, match=r"its runtime \(transformers\) serves none"):
            client.embeddings.create(model="cpu", input="a")
    row = wait_until(lambda: usage.usage_records(db=db, deployment="embed"), what="the embedding's usage row")[0]
    assert (row.endpoint, row.prompt_tokens, row.completion_tokens) == ("embeddings", 4, 0)
