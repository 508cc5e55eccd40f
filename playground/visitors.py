"""Who is at the playground, and the door they came through.

With login on (``COVE_LOGIN``), a person is who their Cove session cookie says (``studio.sessions``: set by the
server's ``/auth/login``, which browsers send to every port of the host); :class:`LoginGate` sends anyone without a
session to the login page, and back after. With login off, every visitor is the first admin. Either way each person
chats through a :class:`playground.keys.PersonalClient`: their own key, never a shared one.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse, Response

from playground.chat import ChatClient, NotLoggedIn, PlaygroundError
from playground.keys import Keyring, PersonalClient
from studio import sessions
from studio.db import Database
from studio.errors import CoveError
from studio.services import users
from studio.settings import Settings
from studio.values import Principal

NOT_LOGGED_IN = "You are not logged in to Cove, or your session ended: reload the page to log in."


@dataclass(frozen=True)
class CoveVisitors:
    """The playground's visitors, read from Cove's database on every request (a removed or disabled user is out at
    their next click), each with their own client from ``keyring``."""

    settings: Settings
    db: Database
    keyring: Keyring

    def who(self, cookies: Mapping[str, str]) -> Principal | None:
        """Who a request's cookies are logged in as (None: nobody); with login off, the first admin. Raises
        PlaygroundError when login is off and there is no enabled admin."""
        if self.settings.login:
            return sessions.principal(self.settings, self.db, cookies)
        try:
            return users.first_admin(db=self.db)
        except CoveError as exc:
            raise PlaygroundError(str(exc)) from exc

    def client(self, cookies: Mapping[str, str]) -> ChatClient:
        """The gateway as this visitor: NotLoggedIn when they are nobody."""
        who = self.who(cookies)
        if who is None:
            raise NotLoggedIn(NOT_LOGGED_IN)
        return PersonalClient(self.keyring, who)

    def greeting(self, cookies: Mapping[str, str]) -> str:
        """The line at the top of the page (HTML): who is logged in, and a link to log out in this tab."""
        try:
            who = self.who(cookies)
        except PlaygroundError as exc:
            return html.escape(str(exc))
        if who is None:
            return html.escape(NOT_LOGGED_IN)
        name = html.escape(who.name)
        if not self.settings.login:
            return f"Login is off: you chat as <strong>{name}</strong>."
        logout = html.escape(self.settings.login_base + "/auth/logout")
        return f'Logged in as <strong>{name}</strong> · <a href="{logout}" target="_self">Log out</a>'


class LoginGate:
    """ASGI middleware: a request reaches the playground only with a Cove session. A page asked for without one is
    sent (303) to the login page, which sends the person back to that page at ``public_url`` (how browsers reach the
    playground); anything else (the Gradio API, its assets) gets 401 with the login page's address. ``open_paths``
    (the health check) need no session.

    ``who`` reads the database, so it runs on a worker thread, off the event loop.
    """

    def __init__(
        self,
        app: Any,
        *,
        who: Callable[[Mapping[str, str]], Principal | None],
        login_url: Callable[[str], str],
        public_url: str,
        open_paths: frozenset[str] = frozenset({"/healthz"}),
    ) -> None:
        self.app, self.who, self.login_url, self.open_paths = app, who, login_url, open_paths
        self.public_url = public_url.rstrip("/")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        who = await anyio.to_thread.run_sync(self.who, dict(connection.cookies))
        if who is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation: before accept, an HTTP 403
            return
        await self._refusal(connection)(scope, receive, send)

    def _refusal(self, connection: HTTPConnection) -> Response:
        accept = connection.headers.get("accept", "")
        if connection.scope["method"] in ("GET", "HEAD") and "text/html" in accept:
            query = connection.url.query
            page = self.public_url + connection.url.path + (f"?{query}" if query else "")
            return RedirectResponse(self.login_url(page), status_code=303)
        body = {"error": "not logged in to Cove", "login": self.login_url(self.public_url + "/")}
        return JSONResponse(body, status_code=401)
