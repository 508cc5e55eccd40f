"""A mock OpenAI-compatible model server that answers as fast as it can, so benchmarks measure what sits in front.

A raw ASGI app on uvicorn (uvloop, httptools, no access log). Serves:

- ``GET /health`` → 200 (what Cove's local backend probes);
- ``POST /v1/chat/completions`` and ``POST /v1/completions``: a small fixed ``chat.completion`` (``text_completion``)
  with usage; with ``"stream": true``, ``--chunks`` SSE chunks of one token each, a usage chunk when
  ``stream_options.include_usage`` is set, then ``data: [DONE]``.

Every response body is built once at start; a request costs one JSON parse of its body. No delays, unless
``--delay-ms`` asks for one before each streamed chunk (streams that last, so that many are open at once).

    python benchmarks/mock_upstream.py --host 127.0.0.1 --port 9000 --model mock [--chunks 16] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PROMPT_TOKENS = 12
WORDS = ("Cove", " is", " a", " self", "-hosted", " AI", " studio", ".")


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class Bodies:
    """Every answer the server gives, serialized once."""

    def __init__(self, model: str, chunks: int) -> None:
        created = int(time.time())
        tokens = [WORDS[i % len(WORDS)] for i in range(chunks)]
        text = "".join(tokens)
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks, "total_tokens": PROMPT_TOKENS + chunks}
        self.chat = orjson.dumps(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            }
        )
        self.completion = orjson.dumps(
            {
                "id": "cmpl-mock",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                "usage": usage,
            }
        )
        chat_chunk = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model}
        self.chat_chunks = [
            _sse(
                {
                    **chat_chunk,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": token} if i == 0 else {"content": token},
                            "finish_reason": "stop" if i == chunks - 1 else None,
                        }
                    ],
                }
            )
            for i, token in enumerate(tokens)
        ]
        self.chat_usage = _sse({**chat_chunk, "choices": [], "usage": usage})
        text_chunk = {"id": "cmpl-mock", "object": "text_completion", "created": created, "model": model}
        self.completion_chunks = [
            _sse(
                {
                    **text_chunk,
                    "choices": [{"index": 0, "text": token, "finish_reason": "stop" if i == chunks - 1 else None}],
                }
            )
            for i, token in enumerate(tokens)
        ]
        self.completion_usage = _sse({**text_chunk, "choices": [], "usage": usage})


JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
DONE = b"data: [DONE]\n\n"


def make_app(model: str, chunks: int, delay_s: float = 0.0) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    bodies = Bodies(model, chunks)

    async def respond(send: Send, status: int, body: bytes) -> None:
        headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/health" and method == "GET":
            await respond(send, 200, b'{"status":"ok"}')
            return
        chat = path == "/v1/chat/completions"
        if not (chat or path == "/v1/completions") or method != "POST":
            await respond(send, 404, b'{"detail":"Not Found"}')
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await respond(send, 400, b'{"detail":"invalid JSON"}')
            return
        if not isinstance(request, dict):
            await respond(send, 400, b'{"detail":"expected a JSON object"}')
            return
        if request.get("stream") is not True:
            await respond(send, 200, bodies.chat if chat else bodies.completion)
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        for chunk in bodies.chat_chunks if chat else bodies.completion_chunks:
            if delay_s:
                await asyncio.sleep(delay_s)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = bodies.chat_usage if chat else bodies.completion_usage
            await send({"type": "http.response.body", "body": usage, "more_body": True})
        await send({"type": "http.response.body", "body": DONE})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="mock", help="the model name answers carry")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per streamed answer")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait before each streamed chunk")
    args = parser.parse_args()
    if args.chunks < 1:
        parser.error("--chunks must be at least 1")
    uvicorn.run(
        make_app(args.model, args.chunks, args.delay_ms / 1000),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
