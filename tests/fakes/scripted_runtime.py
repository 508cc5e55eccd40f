"""An OpenAI-compatible runtime whose answers are fixed, for gateway tests that need exact bytes.

Chat answers "hello from PORT" (so tests can tell replicas apart), in words streamed as SSE with usage on the
last chunk when asked, and (like `transformers serve`) without a trailing ``data: [DONE]``. ``--no-usage`` plays
a runtime that reports no usage; a request whose last message is "fail" gets a 500 with a plain-text body;
"bad" gets a 400 with a FastAPI-style ``{"detail": …}`` body; a stream asked for with "stall" sends its first word
and then nothing more until the client hangs up (a runtime stuck mid-answer).
"""

import argparse
import contextlib
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--no-usage", action="store_true")
args = parser.parse_args()
WORDS = ["hello", " from", f" {args.port}"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, b'{"status": "ok"}')

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        last = request["messages"][-1]["content"] if "messages" in request else request["prompt"]
        if last == "fail":
            self._send(500, b"Internal Server Error", "text/plain")
            return
        if last == "bad":
            self._send(400, b'{"detail": "unsupported value for top_k"}')
            return
        usage = {"prompt_tokens": 7, "completion_tokens": len(WORDS), "total_tokens": 7 + len(WORDS)}
        base = {"id": "x1", "created": 1, "model": request["model"]}
        if not request.get("stream"):
            body = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}, "finish_reason": "stop"}
                ],
            }
            if not args.no_usage:
                body["usage"] = usage
            self._send(200, json.dumps(body).encode())
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i, word in enumerate(WORDS):
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {"index": 0, "delta": {"content": word}, "finish_reason": "stop" if i == len(WORDS) - 1 else None}
                ],
            }
            if i == len(WORDS) - 1 and not args.no_usage and (request.get("stream_options") or {}).get("include_usage"):
                chunk["usage"] = usage
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            if last == "stall":
                self._wait_for_hang_up()
                return
        self._chunk(b"")

    def _wait_for_hang_up(self) -> None:
        """Block until the client closes the connection (it sends nothing more while it waits for the answer)."""
        with contextlib.suppress(ConnectionError):
            while self.connection.recv(1024):
                pass
        self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
server.daemon_threads = True
server.serve_forever()
