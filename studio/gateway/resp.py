"""A lean connection to Redis (or Valkey) for the rate-limit counters: RESP commands pipelined over one asyncio
connection, replies parsed in C by ``hiredis``.

The counters send one script call per request, on the request's path; a general client spends more time in Python
on each call (connection pool, retries, instrumentation) than the server takes to run the script on loopback. This
one writes the command and waits for its reply, in order: many requests share the connection, their commands
pipelined. ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://`` (TLS) URLs as redis-py reads them, with
one option, ``?ssl_ca_certs=FILE`` (a private certificate authority); any other is refused, never ignored.

A connection that fails or closes fails every command waiting on it (``ConnectionError``); the next command opens a
new one. A command cancelled while waiting (its caller's deadline) drops the connection too: a late reply must not
answer the next command. An error reply raises ``ReplyError``. Scripts run by ``evalsha`` are loaded again when the
server has lost them (a restart, ``SCRIPT FLUSH``).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from studio.errors import InvalidSpec

DEFAULT_PORT = 6379
URL_FORM = "COVE_REDIS_URL=redis[s]://[[user]:password@]host[:port][/db][?ssl_ca_certs=FILE]"


class ReplyError(Exception):
    """The server answered a command with an error."""


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(ReplyError(str(reply)))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"the connection to Redis closed: {exc or 'by the server'}"))


class Connection:
    """Commands to the server at ``url``; ``connect_timeout_s`` bounds opening (and authenticating) a connection."""

    def __init__(self, url: str, *, connect_timeout_s: float = 1.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            # the URL itself is never quoted back: it may hold a password
            raise InvalidSpec(f"a Redis URL starts with redis:// or rediss://, not {parts.scheme}://", hint=URL_FORM)
        try:
            self.port, self.db = parts.port or DEFAULT_PORT, int(parts.path.strip("/") or 0)
        except ValueError as exc:
            raise InvalidSpec(f"a Redis URL's port and database are numbers: {exc}", hint=URL_FORM) from None
        self.host = parts.hostname or "localhost"
        self.tls = parts.scheme == "rediss"
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        options = parse_qs(parts.query)
        self.ca_file = options.pop("ssl_ca_certs", [None])[-1]  # a private certificate authority, for rediss://
        if options:
            raise InvalidSpec(f"Redis URL options Cove does not read: {', '.join(sorted(options))}", hint=URL_FORM)
        self.connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._opening = asyncio.Lock()

    async def _open(self) -> _Protocol:
        async with self._opening:
            if self._protocol is not None and self._protocol.transport is not None:
                return self._protocol
            loop = asyncio.get_running_loop()
            context = ssl.create_default_context(cafile=self.ca_file) if self.tls else None
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await loop.create_connection(_Protocol, self.host, self.port, ssl=context)
                try:
                    if self.password is not None:
                        auth = (self.username, self.password) if self.username else (self.password,)
                        await self._send(protocol, ("AUTH", *auth))
                    if self.db:
                        await self._send(protocol, ("SELECT", self.db))
                except BaseException:
                    if protocol.transport is not None:
                        protocol.transport.close()
                    raise
            self._protocol = protocol
            return protocol

    def _send(self, protocol: _Protocol, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        assert protocol.transport is not None
        future = asyncio.get_running_loop().create_future()
        protocol.waiting.append(future)
        protocol.transport.write(pack(args))
        return future

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (bytes, int, list, …); raises ``ReplyError``, ``OSError`` (as
        ``ConnectionError`` when the connection is lost) or ``TimeoutError`` (opening)."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._open()
        try:
            return await self._send(protocol, args)
        except asyncio.CancelledError:
            self._drop(protocol)  # its reply would answer the next command
            raise

    async def evalsha(self, script: str, *args: Any) -> Any:
        """Run ``script`` (no keys: it names its own) with ``args``, loading it first where the server lacks it."""
        sha = hashlib.sha1(script.encode()).hexdigest()
        try:
            return await self.call("EVALSHA", sha, 0, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.call("SCRIPT", "LOAD", script)
        return await self.call("EVALSHA", sha, 0, *args)

    def _drop(self, protocol: _Protocol) -> None:
        if protocol.transport is not None:
            protocol.transport.close()
        if self._protocol is protocol:
            self._protocol = None

    async def close(self) -> None:
        if self._protocol is not None:
            self._drop(self._protocol)
