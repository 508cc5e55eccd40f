"""``cove.Client``: the Cove API over HTTP (httpx), or in process for the CLI on the control plane's machine.

Where it connects, first found: ``Client(url, token)``; COVE_API_URL and COVE_TOKEN; in a hub notebook, COVE_API_URL
with the hub's token for the notebook's user (JUPYTERHUB_API_TOKEN); the login ``cove login URL`` saved.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from collections.abc import Generator, Iterator, Mapping
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote

import httpx
from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_jsonable_python

from cove import login
from studio.errors import BackendUnavailable, CoveError, Unauthorized, from_wire
from studio.models import ApiKeyCreated

PREFIX = "/api/v1"
T = TypeVar("T")


def plain(value: Any) -> Any:
    """Request values as JSON: models dumped (unset fields left out), times as ISO 8601, enums as their values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return to_jsonable_python(value)


class InProcess(httpx.BaseTransport):
    """Requests answered by an ASGI app in this process: the app runs on an event loop in a thread of the
    transport's own, and its answer streams back as the app sends it (a long call's progress arrives as it is
    made, as over HTTP)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cove-in-process", daemon=True)
        self.thread.start()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": unquote(url.path),
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (url.host, url.port or 80),
            "client": ("127.0.0.1", 0),
        }
        sent: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        received = False
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()  # the caller has read the answer (or gone): as a client that hangs up
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.put(message)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except BaseException as exc:  # noqa: BLE001  (handed to the caller's thread, raised there)
                sent.put(exc)
            finally:
                sent.put({"type": "cove.done"})

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        start = sent.get()
        if isinstance(start, BaseException):
            raise start
        if start["type"] != "http.response.start":
            raise RuntimeError(f"the API sent {start['type']!r} before its answer started")

        def chunks() -> Generator[bytes]:
            try:
                while True:
                    message = sent.get()
                    if isinstance(message, BaseException):
                        raise message
                    if message["type"] == "cove.done":
                        return
                    if message["type"] == "http.response.body":
                        yield message.get("body", b"")
            finally:
                self.loop.call_soon_threadsafe(done.set)
                future.result()

        return httpx.Response(
            start["status"], headers=start.get("headers", []), stream=_Chunks(chunks()), request=request
        )

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class _Chunks(httpx.SyncByteStream):
    def __init__(self, chunks: Generator[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    def close(self) -> None:
        self.chunks.close()  # the caller stopped reading: let the app finish, and hear of it ending


def _found(url: str | None, token: str | None) -> tuple[str, str]:
    url = url or os.environ.get("COVE_API_URL", "")
    token = token or os.environ.get("COVE_TOKEN", "")
    if url and not token:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")  # a hub notebook: its user's own token
    if not url or not token:
        saved = login.load()
        if saved is not None:
            url, token = url or saved.url, token or saved.token
    if not url:
        raise Unauthorized(
            "no Cove to talk to: no URL given, no COVE_API_URL, and no `cove login` on this machine",
            hint="cove.Client('https://cove.example.com', token=…), or `cove login URL`",
        )
    if not token:
        raise Unauthorized(f"no token for {url}", hint="set COVE_TOKEN, or `cove login URL`")
    return url.rstrip("/"), token


class Client:
    """The Cove API. Each noun is an attribute: ``deployments``, ``models``, ``keys``, … Methods return the
    server's typed models and raise its errors."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 300) -> None:
        self.url, self.token = _found(url, token)
        self.http = httpx.Client(
            base_url=self.url + PREFIX, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout
        )
        self._nouns()

    @classmethod
    def in_process(cls, app: Any, *, url: str = "http://cove.local") -> Client:
        """A client of ``app`` (the API) in this process: the CLI without a login, on the control plane's machine."""
        self = cls.__new__(cls)
        self.url, self.token = url, ""
        self.http = httpx.Client(base_url=url + PREFIX, transport=InProcess(app), timeout=None)
        self._nouns()
        return self

    @classmethod
    def log_in(
        cls,
        url: str,
        name: str,
        password: str,
        *,
        token_name: str | None = None,
        expires_days: int = 30,
        timeout: float = 300,
    ) -> tuple[Client, ApiKeyCreated]:
        """Exchange ``name``'s password for a new token (every scope, expiring after ``expires_days``) and a client
        that uses it. The password is sent once, to ``POST /login``, and kept nowhere."""
        self = cls.__new__(cls)
        self.url, self.token = url.rstrip("/"), ""
        self.http = httpx.Client(base_url=self.url + PREFIX, timeout=timeout)
        self._nouns()
        body = {"name": name, "password": password, "expires_days": expires_days}
        if token_name:
            body["token_name"] = token_name
        try:
            created: ApiKeyCreated = self.call(ApiKeyCreated, "POST", "/login", body=body)
        except BaseException:
            self.close()
            raise
        self.token = created.key
        self.http.headers["Authorization"] = f"Bearer {created.key}"
        return self, created

    @classmethod
    def from_login(cls, *, timeout: float = 300) -> Client:
        """A client of the Cove that `cove login` saved on this machine, as the token's owner."""
        saved = login.load()
        if saved is None:
            raise Unauthorized(
                f"no `cove login` on this machine (none in {login.credentials_file()})", hint="`cove login URL`"
            )
        return cls(saved.url, saved.token, timeout=timeout)

    def _nouns(self) -> None:
        from cove.aliases import Aliases
        from cove.benchmarks import Benchmarks
        from cove.budgets import Budgets
        from cove.clusters import Clusters
        from cove.datasets import Datasets
        from cove.deployments import Deployments
        from cove.evaluations import Evaluations
        from cove.events import Events
        from cove.finetunes import FineTunes
        from cove.images import Images
        from cove.keys import Keys
        from cove.limits import Limits
        from cove.models import Models
        from cove.notebooks import Notebooks
        from cove.pools import Pools
        from cove.prices import Prices
        from cove.specs import Specs
        from cove.usage import Usage
        from cove.users import Groups, Users

        self.deployments = Deployments(self)
        self.finetunes = FineTunes(self)
        self.evaluations = Evaluations(self)
        self.benchmarks = Benchmarks(self)
        self.models = Models(self)
        self.keys = Keys(self)
        self.limits = Limits(self)
        self.prices = Prices(self)
        self.budgets = Budgets(self)
        self.images = Images(self)
        self.pools = Pools(self)
        self.clusters = Clusters(self)
        self.users = Users(self)
        self.groups = Groups(self)
        self.notebooks = Notebooks(self)
        self.usage = Usage(self)
        self.events = Events(self)
        self.specs = Specs(self)
        self.datasets = Datasets(self)
        self.aliases = Aliases(self)

    # ------------------------------------------------------------------------------------------------ plumbing

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call; a Cove error answer is raised as the server's own error class."""
        response = self._send(method, path, body=body, params=params, headers=headers)
        if response.is_error:
            self._raise(response)
        if response.content and "json" not in response.headers.get("content-type", ""):
            raise self._not_a_cove(f"a {response.headers.get('content-type') or 'non-JSON'} page")
        return response

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """The answer to one request (unset parameters left out); BackendUnavailable when nothing answers."""
        query = {k: plain(v) for k, v in (params or {}).items() if v is not None}
        json_body = plain(body) if body is not None else None
        request = self.http.build_request(method, path, json=json_body, params=query, headers=headers)
        try:
            return self.http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"the Cove API at {self.url} does not answer: {exc}") from exc

    def _raise(self, response: httpx.Response) -> NoReturn:
        """The error an error answer carries, as the server's own class."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code == 404 and not (isinstance(payload, dict) and "error" in payload):
            raise self._not_a_cove(f"HTTP 404 for {response.request.url.path}")
        raise from_wire(response.status_code, payload)

    def _not_a_cove(self, what: str) -> BackendUnavailable:
        return BackendUnavailable(
            f"{self.url} answers, but not as a Cove: it gave {what}",
            hint="give the address of `cove server` (where the gateway and /api/v1 are), e.g. https://cove.example.com",
        )

    def lines(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """An NDJSON answer, one parsed line at a time as the server sends it; an error answer is raised."""
        response = self._send(method, path, body=body, params=params, stream=True)
        try:
            if response.is_error:
                response.read()
                self._raise(response)
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)
        finally:
            response.close()

    def call(self, kind: Any, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` with its answer read as ``kind`` (a model, ``list[Model]``, …)."""
        response = self.request(method, path, **kwargs)
        return TypeAdapter(kind).validate_python(response.json()) if kind is not None else None

    def pages(self, kind: type[T], path: str, /, *, limit: int = 100, **filters: Any) -> Iterator[T]:
        """Every item of a list, page by page (``limit`` per request), as ``kind``."""
        adapter = TypeAdapter(list[kind])  # type: ignore[valid-type]
        offset: int | None = 0
        while offset is not None:
            page = self.request("GET", path, params={**filters, "offset": offset, "limit": limit}).json()
            yield from adapter.validate_python(page["items"])
            offset = page["next_offset"]

    def whoami(self) -> dict[str, Any]:
        """Who this client acts as: name, role, groups, the token's name and scopes."""
        answer: dict[str, Any] = self.request("GET", "/whoami").json()
        return answer

    @property
    def gateway_url(self) -> str:
        """The OpenAI-compatible gateway (``/v1``) of the same Cove."""
        return self.url + "/v1"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Client", "CoveError"]
