"""An OpenAI-compatible streaming server with a designed capacity, for the benchmark's tests.

It has ``--slots`` K slots. A request waits in FIFO order for a free slot, then streams ``max_tokens`` tokens, one
every ``--token-ms`` D (the first D after it got its slot), and frees the slot. So a request alone takes
S = max_tokens × D; TTFT = D, ITL = TPOT = D when it does not wait; and the server completes at most K / S requests
per second: past that rate the queue, and every latency, grows without bound (the knee).

With ``--timings FILE`` it appends, for each request it answers, the server's own view as a JSON line: when the
request arrived, got its slot, wrote its first token and its end (``time.perf_counter``, which on Linux is one
monotonic clock for every process, so a client's times can be set beside these): what a benchmark client measured
can be checked against what happened.

    python tests/fakes/knee_server.py --port P --slots 4 --token-ms 20 [--timings FILE]
"""

import argparse
import asyncio
import json
import time

from aiohttp import web

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--slots", type=int, required=True)
parser.add_argument("--token-ms", type=float, required=True)
parser.add_argument("--timings", help="append each request's server-side times to this file (JSON lines)")
args = parser.parse_args()
timings = open(args.timings, "a", buffering=1) if args.timings else None  # noqa: SIM115 (open for the server's life)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def complete(request: web.Request) -> web.StreamResponse:
    arrived = time.perf_counter()
    body = await request.json()
    tokens = int(body.get("max_tokens") or 16)
    chat = "messages" in body
    prompt = body["messages"][-1]["content"] if chat else body["prompt"]
    if isinstance(prompt, list):  # content parts, as GuideLLM and AIPerf send them
        prompt = " ".join(part.get("text", "") for part in prompt)
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": tokens}
    usage["total_tokens"] = usage["prompt_tokens"] + tokens
    slots: asyncio.Semaphore = request.app["slots"]
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)

    async def event(payload: dict) -> None:
        await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")

    try:
        async with slots:  # asyncio's semaphore wakes its waiters first come, first served
            began = first = time.perf_counter()
            for i in range(tokens):
                # each token on a fixed schedule from the start, so small delays do not add up
                await asyncio.sleep(max(0.0, began + (i + 1) * args.token_ms / 1000 - time.perf_counter()))
                choice = {"index": 0, "delta": {"content": " tok"}} if chat else {"index": 0, "text": " tok"}
                await event({"id": "k", "object": "chunk", "model": body["model"], "choices": [choice]})
                first = first if i else time.perf_counter()
        if (body.get("stream_options") or {}).get("include_usage"):
            await event({"id": "k", "object": "chunk", "model": body["model"], "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        if timings is not None:
            times = {"arrived": arrived, "slot": began, "first": first, "ended": time.perf_counter()}
            timings.write(json.dumps(times) + "\n")
    except ConnectionResetError:
        pass  # the client hung up (a benchmark step cut short): its slot is free again, as in a real server
    return response


async def start() -> web.Application:
    app = web.Application()
    app["slots"] = asyncio.Semaphore(args.slots)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", health)
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_post("/v1/completions", complete)
    return app


web.run_app(start(), host="127.0.0.1", port=args.port, print=None, access_log=None)
