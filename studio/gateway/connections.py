"""A deadline on each request's line and headers, for the HTTP server the gateway runs on (uvicorn, httptools).

uvicorn holds a connection that sends nothing, or a request line whose headers never end, for as long as the client
keeps it open: its keep-alive timer runs only between requests, and the app sees a request only once its headers are
complete. Each such connection holds a place under ``max_connections`` (``limit_concurrency``), so a few thousand
silent connections would leave every real client a 503. With this protocol, a connection whose request line and
headers are not all there ``timeout_s`` after it opened (or after the first byte of its next request) is answered
408 and closed. The body has its own deadline, in the app (``body_timeout_s``).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from studio.gateway.protocol import error_body


class HeaderDeadline(HttpToolsProtocol):
    timeout_s = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        body = error_body(f"the request's headers did not arrive within {self.timeout_s:g} s", code="timeout")
        head = f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.transport.write(head.encode() + b"connection: close\r\n\r\n" + body)
        self.transport.close()


def header_deadline(timeout_s: float) -> type[HeaderDeadline]:
    """The protocol class to pass uvicorn as ``http=``, with this deadline."""
    return type("HeaderDeadline", (HeaderDeadline,), {"timeout_s": timeout_s})
