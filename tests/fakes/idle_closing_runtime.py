"""Answers the first request on each connection and keeps it open, then closes it, unanswered, when the next
request arrives on it: a model server whose keep-alive timer fired just as the gateway reused the connection."""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self) -> None:
        super().setup()
        self.answered = 0

    def do_GET(self) -> None:
        self._answer(b"ok")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.answered:
            self.close_connection = True  # nothing is written: the client reads the end of the connection
            return
        choice = {"index": 0, "message": {"role": "assistant", "content": "fresh"}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        self._answer(json.dumps({"object": "chat.completion", "choices": [choice], "usage": usage}).encode())

    def _answer(self, body: bytes) -> None:
        self.answered += 1
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
server = ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler)
server.daemon_threads = True
server.serve_forever()
