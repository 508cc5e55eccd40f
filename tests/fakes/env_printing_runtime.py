"""A runtime that writes the environment it was started with to ``env-PORT.json`` in its working directory, then
answers every GET with 200: for tests of what a replica's process can see."""

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()
written = Path(f"env-{args.port}.json.tmp")
written.write_text(json.dumps(dict(os.environ)))
written.replace(f"env-{args.port}.json")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
