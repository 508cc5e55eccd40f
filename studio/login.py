"""``/auth``: where people log in, once for every face (served by ``cove server`` beside the gateway).

``/auth/login`` takes a name and password (argon2, ``services.users``) or hands over to the team's OpenID Connect
provider (Authlib) when ``COVE_OIDC_ISSUER`` is set, then sets the session cookie (``studio.sessions``) and sends the
person back where they came from (``next``: only to this host or Cove's own faces, never elsewhere).
``/auth/logout`` ends the session; ``/auth/whoami`` says who a cookie belongs to. A provider that does not answer
gets a page that says so, not a stack trace.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2  # Authlib's HTTP client
from authlib.integrations.base_client.errors import OAuthError
from joserfc.errors import JoseError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from studio import sessions
from studio.db import Database
from studio.errors import CoveError, Unauthorized
from studio.sealing import studio_key
from studio.services import users
from studio.settings import Settings
from studio.values import Principal

log = logging.getLogger(__name__)
# What a provider round trip may raise: refused or malformed answers (Authlib's OAuthError, a JOSE error in the ID
# token, a missing key in the metadata) and an unreachable or failing provider (httpx2, which Authlib uses; httpx).
PROVIDER_ERRORS = (OAuthError, JoseError, httpx.HTTPError, httpx2.HTTPError, KeyError, ValueError)

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Cove · {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;background:#f6f7f9;display:grid;place-items:center;min-height:90vh}}
main{{background:#fff;padding:2rem 2.5rem;border-radius:12px;box-shadow:0 2px 12px #0001;width:22rem}}
h1{{font-size:1.3rem;margin:0 0 1rem}} label{{display:block;margin:.6rem 0 .2rem}}
input{{width:100%;padding:.5rem;box-sizing:border-box}} button,a.button{{margin-top:1rem;width:100%;padding:.6rem;
background:#1f6feb;color:#fff;border:0;border-radius:6px;font-size:1rem;text-align:center;display:block;
text-decoration:none}} .problem{{color:#b42318;margin:.5rem 0}} .or{{text-align:center;color:#888;margin-top:1rem}}
</style></head><body><main><h1>{title}</h1>{body}</main></body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), body=body), status_code=status)


def safe_next(target: str, request: Request, settings: Settings) -> str:
    """``target`` when it points at this host (any port: the faces share it) or at one of Cove's faces; else the
    studio. Never anywhere else: a login page must not send people to a stranger's site."""
    if target.startswith("/") and not target.startswith("//"):
        return target
    parts = urlsplit(target)
    ours = {urlsplit(u).hostname for u in (settings.ui_url, settings.playground_url, settings.hub_url)}
    ours |= {urlsplit(settings.login_base).hostname, request.url.hostname}
    host = parts.hostname or ""
    domain = settings.session_domain.lstrip(".")
    if parts.scheme in ("http", "https") and (host in ours or (domain and host.endswith("." + domain))):
        return target
    return settings.ui_url


def user_name(claim: str) -> str:
    """A provider's name for someone (``Ana.Lopez@example.com``) as a Cove user name (``ana-lopez``)."""
    local = claim.split("@", 1)[0].lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", local)).strip("-")[:53] or "user"


class Login:
    """The ``/auth`` app: routes, the session cookie, and (when configured) the OpenID Connect client."""

    def __init__(self, *, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.oauth: Any = None
        if settings.oidc_issuer:
            from authlib.integrations.starlette_client import OAuth

            self.oauth = OAuth()
            self.oauth.register(
                "provider",
                server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
                client_id=settings.oidc_client_id,
                client_secret=settings.oidc_client_secret,
                client_kwargs={"scope": settings.oidc_scopes},
            )
        self.app = Starlette(
            routes=[
                Route("/auth/login", self.login_page, methods=["GET"]),
                Route("/auth/login", self.login_with_password, methods=["POST"]),
                Route("/auth/oidc", self.login_with_provider, methods=["GET"]),
                Route("/auth/callback", self.provider_callback, methods=["GET"]),
                Route("/auth/logout", self.logout, methods=["GET", "POST"]),
                Route("/auth/whoami", self.whoami, methods=["GET"]),
            ],
            # Authlib keeps the provider round trip's state (and where to go after) in a signed cookie of its own
            middleware=[Middleware(SessionMiddleware, secret_key=studio_key(settings), session_cookie="cove_oidc")],
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # ------------------------------------------------------------------------------------------------ pages

    def _form(self, next_url: str, problem: str = "", status: int = 200) -> HTMLResponse:
        body = f'<p class="problem" role="alert">{html.escape(problem)}</p>' if problem else ""
        body += (
            '<form method="post" action="/auth/login">'
            f'<input type="hidden" name="next" value="{html.escape(next_url)}">'
            '<label for="name">User name</label>'
            '<input id="name" name="name" autocomplete="username" required autofocus>'
            '<label for="password">Password</label>'
            '<input id="password" name="password" type="password" autocomplete="current-password" required>'
            '<button type="submit">Log in</button></form>'
        )
        if self.oauth is not None:
            host = html.escape(urlsplit(self.settings.oidc_issuer).hostname or "your provider")
            body += f'<p class="or">or</p><a class="button" href="/auth/oidc?next={html.escape(next_url)}">'
            body += f"Log in with {host}</a>"
        return _page("Log in to Cove", body, status)

    def _logged_in(self, name: str, next_url: str) -> Response:
        response = RedirectResponse(next_url, status_code=303)
        response.set_cookie(
            sessions.COOKIE,
            sessions.issue(self.settings, name),
            max_age=int(self.settings.session_hours * 3600),
            domain=self.settings.session_domain or None,
            secure=self.settings.login_base.startswith("https://"),
            httponly=True,
            samesite="lax",
        )
        return response

    async def login_page(self, request: Request) -> Response:
        next_url = safe_next(request.query_params.get("next", ""), request, self.settings)
        if await self._who(request) is not None:
            return RedirectResponse(next_url, status_code=303)  # logged in already
        return self._form(next_url)

    async def login_with_password(self, request: Request) -> Response:
        form = await request.form()
        next_url = safe_next(str(form.get("next", "")), request, self.settings)
        name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
        try:  # off the event loop: the password hash takes tens of milliseconds of CPU, the gateway shares the loop
            who = await run_in_threadpool(users.authenticate, db=self.db, name=name, password=password)
        except Unauthorized as exc:
            return self._form(next_url, exc.message, status=401)
        return self._logged_in(who.name, next_url)

    async def login_with_provider(self, request: Request) -> Response:
        if self.oauth is None:
            return _page("No login provider", "<p>Cove logs people in with passwords here.</p>", 404)
        request.session["next"] = safe_next(request.query_params.get("next", ""), request, self.settings)
        try:
            response: Response = await self.oauth.provider.authorize_redirect(
                request, self.settings.login_base + "/auth/callback"
            )
        except PROVIDER_ERRORS as exc:  # its metadata could not be read: network, TLS, or not a provider at all
            return self._provider_down(exc)
        return response

    async def provider_callback(self, request: Request) -> Response:
        if self.oauth is None:
            return _page("No login provider", "<p>Cove logs people in with passwords here.</p>", 404)
        next_url = str(request.session.pop("next", self.settings.ui_url))
        try:
            token = await self.oauth.provider.authorize_access_token(request)
        except PROVIDER_ERRORS as exc:  # refused, expired state, or the provider went away mid-login
            return self._provider_down(exc)
        claims = dict(token.get("userinfo") or {})
        raw = str(claims.get(self.settings.oidc_username_claim) or claims.get("email") or claims.get("sub") or "")
        groups = claims.get(self.settings.oidc_groups_claim) or []
        groups = [user_name(str(g)) for g in (groups if isinstance(groups, list) else [groups])]
        try:
            who = await run_in_threadpool(
                users.sync_provider_user,
                db=self.db,
                name=user_name(raw),
                groups=groups,
                admin=user_name(self.settings.oidc_admin_group) in groups,
            )
        except CoveError as exc:
            return self._form(next_url, exc.message, status=403)
        return self._logged_in(who.name, next_url)

    def _provider_down(self, exc: Exception) -> HTMLResponse:
        log.warning("login provider %s: %s", self.settings.oidc_issuer, exc)
        issuer = html.escape(self.settings.oidc_issuer)
        body = (
            f"<p>The login provider at <code>{issuer}</code> did not answer as it should "
            f"(<code>{html.escape(type(exc).__name__)}: {html.escape(str(exc))[:200]}</code>).</p>"
            "<p>Try again in a minute; if it goes on, tell your Cove admin.</p>"
            '<a class="button" href="/auth/login">Back to the login page</a>'
        )
        return _page("The login provider is unavailable", body, 502)

    async def _who(self, request: Request) -> Principal | None:
        return await run_in_threadpool(sessions.principal, self.settings, self.db, request.cookies)

    async def logout(self, request: Request) -> Response:
        response = _page(
            "Logged out", '<p>You are logged out of Cove.</p><a class="button" href="/auth/login">Log in</a>'
        )
        response.delete_cookie(sessions.COOKIE, domain=self.settings.session_domain or None)
        return response

    async def whoami(self, request: Request) -> Response:
        who = await self._who(request)
        if who is None:
            return JSONResponse({"error": "not logged in"}, status_code=401)
        return JSONResponse({"name": who.name, "role": who.role.value, "groups": sorted(who.groups)})
