"""Healthy, but a streamed answer sends one token and then only keep-alive comments, every half second, forever:
each read gets bytes in time, so no per-read timeout ever ends it."""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        first = {"id": "t1", "object": "chat.completion.chunk", "created": 1, "model": request["model"],
                 "choices": [{"index": 0, "delta": {"content": "one"}, "finish_reason": None}]}  # fmt: skip
        self._chunk(b"data: " + json.dumps(first).encode() + b"\n\n")
        try:
            while True:
                time.sleep(0.5)
                self._chunk(b": still thinking\n\n")
        except OSError:  # the gateway hung up
            return

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
server = ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler)
server.daemon_threads = True
threading.Thread(target=server.serve_forever).start()
