"""Healthy, but never answers a completion: the request is read and then nothing comes back."""

import argparse
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

forever = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        forever.wait()

    def log_message(self, *args: object) -> None:
        pass


parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
server = ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler)
server.daemon_threads = True
server.serve_forever()
