"""What benchmark clients (`vllm bench serve`, GuideLLM, AIPerf) meet at the gateway, over real HTTP: the health probe,
request fields the runtime does not know, cancelled streams metered with the model's tokenizer, and the TPOT/ITL
histograms. Each deployment is Ready (written as the controller would) at a recording runtime started here, which keeps
every request body it received."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from studio.db import Database, utcnow
from studio.models import ApiKeyCreate, ImageCreate, ModelCreate
from studio.services import images, keys, models, usage
from studio.settings import Settings
from studio.values import RuntimeKind
from tests.integration.conftest import GatewayServer, deploy, wait_until
from tests.integration.test_gateway import play_ready
from tests.people import ADMIN

WORDS = ["hello", " there", " friend"]


class Recording(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[dict[str, Any]] = []
        self.released = threading.Event()  # a stream asked for with "stall" waits for this (or its client to go)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recording

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(body)
        if not body.get("stream"):
            reply = {
                "id": "r",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        stall = body["messages"][-1]["content"] == "stall"
        for i, word in enumerate(WORDS):  # no usage: the gateway must count
            if stall and i == 1:
                self.server.released.wait(10)
            event = {"id": "r", "model": body["model"], "choices": [{"index": 0, "delta": {"content": word}}]}
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def recording() -> Iterator[Recording]:
    server = Recording()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def key(db: Database) -> str:
    return keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="bench")).key


def ready_on(db: Database, recording: Recording, name: str, model: str, runtime: RuntimeKind) -> None:
    image = f"{runtime.value}-image"
    images.add_image(
        actor=ADMIN,
        db=db,
        data=ImageCreate(
            name=image, version="1", ref=f"example.com/{image}", runtime=runtime, local_command=["x", "{port}"]
        ),
    )
    deploy(db, name, model, image)
    play_ready(db, name, [recording.url])


BENCH_FIELDS = {
    "ignore_eos": True,
    "min_tokens": 8,
    "top_k": 20,
    "repetition_penalty": 1.1,
    "stream_options": {"include_usage": True, "continuous_usage_stats": True},
}


def chat(gateway: GatewayServer, key: str, model: str, content: str = "hi", **fields: Any) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **fields},
    )


@pytest.mark.runtime
def test_fields_a_transformers_runtime_refuses_are_dropped_and_named_and_vllm_gets_them(
    db: Database, stub_model: str, gateway: GatewayServer, recording: Recording, key: str
) -> None:
    ready_on(db, recording, "cpu", stub_model, RuntimeKind.TRANSFORMERS)
    ready_on(db, recording, "gpu", stub_model, RuntimeKind.VLLM)

    reply = chat(gateway, key, "cpu", stream=True, **BENCH_FIELDS)
    assert reply.status_code == 200
    assert reply.headers["x-cove-dropped-fields"] == "ignore_eos,min_tokens,top_k,stream_options.continuous_usage_stats"
    assert reply.headers["x-cove-translated-fields"] == "repetition_penalty"
    sent = recording.bodies[-1]
    assert not {"ignore_eos", "min_tokens", "top_k", "repetition_penalty"} & set(sent)
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["frequency_penalty"] == pytest.approx(0.1)

    reply = chat(gateway, key, "gpu", stream=True, **BENCH_FIELDS)
    assert reply.status_code == 200
    assert "x-cove-dropped-fields" not in reply.headers
    sent = recording.bodies[-1]
    assert {k: sent[k] for k in BENCH_FIELDS} == BENCH_FIELDS  # vLLM knows them all: forwarded as sent

    plain = chat(gateway, key, "cpu")  # nothing to drop: no header
    assert plain.status_code == 200
    assert "x-cove-dropped-fields" not in plain.headers


@pytest.mark.runtime
def test_health_probe_and_models_answer_as_vllms(
    db: Database, stub_model: str, gateway: GatewayServer, recording: Recording, key: str
) -> None:
    probe = httpx.get(gateway.url + "/health")
    assert (probe.status_code, probe.content) == (200, b"")
    assert httpx.get(gateway.url + "/healthz").json()["status"] == "ok"  # the operators' report stays
    ready_on(db, recording, "gpu", stub_model, RuntimeKind.VLLM)
    listed = wait_until(
        lambda: httpx.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).json()["data"],
        timeout=10,
        what="the deployment listed after a refresh",
    )
    assert [(m["id"], m["root"]) for m in listed] == [("gpu", "gpu")]  # vllm bench serve reads data[0].root


@pytest.mark.runtime
def test_tpot_and_itl_histograms_fill_after_a_stream(
    db: Database, stub_model: str, gateway: GatewayServer, recording: Recording, key: str
) -> None:
    ready_on(db, recording, "gpu", stub_model, RuntimeKind.VLLM)
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpu", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ) as response:
        assert response.status_code == 200
        response.read()
    metrics = wait_until(
        lambda: (
            'cove_gateway_time_per_output_token_seconds_count{deployment="gpu"} 1.0'
            in (text := httpx.get(gateway.url + "/metrics").text)
            and text
        ),
        timeout=60,
        what="the stream's TPOT observed",
    )
    assert 'cove_gateway_time_to_first_token_seconds_count{deployment="gpu"} 1.0' in metrics
    itl = next(
        line for line in metrics.splitlines() if line.startswith("cove_gateway_inter_token_latency_seconds_count")
    )
    assert 1 <= float(itl.rsplit(" ", 1)[1]) <= len(WORDS) - 1  # one gap per chunk after the first
    assert (
        'cove_gateway_request_duration_seconds_bucket{deployment="gpu",endpoint="chat.completions",le="0.00625",'
        'model_version="1"}' in (metrics)
    )


@pytest.mark.runtime
def test_a_stream_the_client_leaves_is_metered_with_the_models_tokenizer(
    db: Database, settings: Settings, demo_folder: Path, gateway: GatewayServer, recording: Recording, key: str
) -> None:
    from transformers import AutoTokenizer

    models.add_model(
        db=db, actor=ADMIN, cache_dir=settings.models_dir, data=ModelCreate(name="demo", source=str(demo_folder))
    )
    ready_on(db, recording, "cpu", "demo", RuntimeKind.TRANSFORMERS)
    messages = [{"role": "user", "content": "stall"}]
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "cpu", "stream": True, "messages": messages},
        timeout=10,
    ) as response:
        first = next(line for line in response.iter_lines() if line)
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"] == "hello"
    # the client has gone; the runtime is still stuck: the gateway notices at its next read
    recording.released.set()
    (record,) = wait_until(lambda: usage.usage_records(db=db, deployment="cpu"), timeout=60, what="its usage record")
    tokenizer = AutoTokenizer.from_pretrained(str(demo_folder))
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(prompt, "keys"):
        prompt = prompt["input_ids"]
    assert record.status_code == 499
    assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (
        len(prompt),
        len(tokenizer.encode("hello", add_special_tokens=False)),
        False,
    )


def test_usage_keeps_errors_and_cancels_apart_from_served_requests(db: Database, key: str) -> None:
    key_id = next(iter(keys.active_keys(db=db).values())).id
    row = {"api_key_id": key_id, "deployment": "cpu", "endpoint": "chat.completions", "stream": True}
    now = {"latency_ms": 1.0, "ttft_ms": None, "created_at": utcnow(), "estimated": False}
    usage.record_usage(
        db=db,
        records=[
            {**row, **now, "status_code": 200, "prompt_tokens": 10, "completion_tokens": 5},
            {**row, **now, "status_code": 499, "prompt_tokens": 10, "completion_tokens": 2},
            {**row, **now, "status_code": 502, "prompt_tokens": 10, "completion_tokens": 1},
            {**row, **now, "status_code": 401, "prompt_tokens": 0, "completion_tokens": 0},
        ],
    )
    (summary,) = usage.usage_summary(db=db, actor=ADMIN)
    assert (summary.requests, summary.served, summary.cancelled, summary.errors) == (4, 1, 1, 2)
    assert (summary.prompt_tokens, summary.completion_tokens, summary.error_tokens) == (20, 7, 11)
