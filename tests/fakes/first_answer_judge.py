"""An OpenAI-compatible server with a position bias: as a judge (a system prompt that asks for a verdict) it always
prefers answer A, whatever the answers say; asked anything else it answers with the question itself, so a test
knows every answer in advance.

``python tests/fakes/first_answer_judge.py --port PORT``, or ``serve(port)`` in a thread.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        messages = request["messages"]
        judging = messages[0]["role"] == "system" and "Verdict:" in messages[0]["content"]
        content = "Both have merit, but the first is better.\nVerdict: A" if judging else messages[-1]["content"]
        body = json.dumps(
            {
                "id": "fake",
                "object": "chat.completion",
                "model": request.get("model", ""),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def server(port: int = 0) -> ThreadingHTTPServer:
    """The server, bound (port 0: any free one); the caller runs ``serve_forever``."""
    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    server(parser.parse_args().port).serve_forever()
