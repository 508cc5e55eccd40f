"""Who may use the hub: the people Cove knows, as Cove knows them (``CoveAuthenticator``).

With login on (``COVE_LOGIN``, the default):

- **Single sign-on.** ``GET /hub/login`` reads Cove's session cookie (``cove_session``, set by ``cove server``'s
  ``/auth/login``; browsers send a host's cookies to every port of it, so the hub sees it too), checks it with
  ``studio.sessions`` (signature, age, and that the user still exists and is enabled) and logs the person in as that
  Cove user: a hub admin when a Cove admin, in hub groups named as their Cove groups (``manage_groups``; the hub's
  group APIs are off, Cove is where groups change). Without a valid cookie it sends them to Cove's login page, which
  sends them back to ``/hub/login``. Coming back still without a cookie the hub can read (the faces on different
  hosts without ``COVE_SESSION_DOMAIN``, or a hub without the studio's ``COVE_SECRET_KEY``) is a 403 that says so,
  never a redirect loop.
- **Passwords.** ``POST /hub/login`` with ``username`` and ``password`` (the hub's own form, a script) is checked
  against Cove's passwords (``users.authenticate``). A posted password is always checked, never passed over for a
  cookie: ``admin`` with a wrong password is refused, even from a browser logged in to Cove as someone else.
- **Refresh.** A hub login is checked against Cove again every ``auth_refresh_age`` seconds and before every spawn
  (``refresh_user``): someone removed or disabled in Cove must log in again, and cannot; a changed role or groups
  follow. ``/hub/logout`` ends the Cove session too (it goes on to Cove's ``/auth/logout``).

With login off, the hub does what every face does then: every visitor is Cove's first admin, asked nothing (a posted
name and password are not looked at). That is safe only because nobody else can reach it: Cove refuses to start a
face beyond loopback with login off (``studio.server.refuse_exposed``).

Failure modes: a database that does not answer fails the login with the hub's error page (500), never lets anyone in.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.handlers.login import LoginHandler, LogoutHandler
from tornado import web
from tornado.httputil import url_concat
from traitlets import Any as AnyTrait
from traitlets import default

from hub.database import studio_database
from studio import sessions
from studio.errors import Unauthorized
from studio.services import users
from studio.settings import Settings
from studio.values import Principal

RETURNED = "from_cove"  # added to /hub/login when Cove's login page sends someone back


def auth_model(who: Principal) -> dict[str, Any]:
    """JupyterHub's view of a Cove user: name, admin flag and groups (sorted, so the model is deterministic)."""
    return {"name": who.name, "admin": who.is_admin, "groups": sorted(who.groups)}


class CoveAuthenticator(Authenticator):
    """People log in to the hub as their Cove identity (see the module's docstring for the paths)."""

    cove_settings = AnyTrait(help="Cove's Settings (set by hub/jupyterhub_config.py).").tag(config=True)

    @default("auto_login")
    def _default_auto_login(self) -> bool:
        return True  # the hub shows no login form of its own: /hub/login signs in from Cove's session

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True  # Cove's groups are the hub's: the spawners' profiles follow them

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        return True  # every enabled Cove user may log in; Cove decides who exists

    @default("refresh_pre_spawn")
    def _default_refresh_pre_spawn(self) -> bool:
        return True

    @default("auth_refresh_age")
    def _default_auth_refresh_age(self) -> int:
        return 60  # a removal in Cove ends a hub login within a minute (the spawners check Cove at every start)

    @property
    def settings(self) -> Settings:
        return self.cove_settings or Settings()

    async def authenticate(self, handler: Any, data: dict[str, str] | None) -> dict[str, Any] | None:
        """A posted name and password (checked against Cove's), else Cove's session cookie; None when neither holds.
        With login off: the first admin, whatever was sent."""
        settings, db = self.settings, studio_database(self.settings)
        if not settings.login:
            return auth_model(await asyncio.to_thread(users.first_admin, db=db))
        if data and "password" in data:
            name = data.get("username", "")
            try:
                who = await asyncio.to_thread(users.authenticate, db=db, name=name, password=data["password"])
            except Unauthorized as exc:
                self.log.warning("hub login of %r refused by Cove: %s", name[:64], exc.message)
                return None
            return auth_model(who)
        token = handler.get_cookie(sessions.COOKIE) if handler is not None else None
        if not token:
            return None
        found = await asyncio.to_thread(sessions.principal, settings, db, {sessions.COOKIE: token})
        if found is None:
            self.log.info("a Cove session cookie was refused (forged, expired, or its user removed or disabled)")
            return None
        return auth_model(found)

    async def refresh_user(self, user: Any, handler: Any = None) -> bool | dict[str, Any]:
        """False (log in again) when the user is no longer an enabled Cove user; else their current role and
        groups. With login off, nothing to refresh."""
        if not self.settings.login:
            return True
        try:
            who = await asyncio.to_thread(users.principal, db=studio_database(self.settings), name=user.name)
        except Unauthorized as exc:
            self.log.warning("hub login of %s ends: %s", user.name, exc.message)
            if handler is not None and not hasattr(handler, "_token_authenticated"):
                # JupyterHub 6.1.1 reads this after a refused refresh but sets it only for token-authenticated
                # requests: without it a cookie-authenticated one ends in an AttributeError, not a clean logout
                handler._token_authenticated = False
            return False
        return auth_model(who)

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        return [("/login", CoveLoginHandler), ("/logout", CoveLogoutHandler)]


class CoveLoginHandler(LoginHandler):
    """``GET /hub/login``: in from Cove's session, or off to Cove's login page and back. ``POST`` (a name and a
    password) is JupyterHub's own, through ``CoveAuthenticator.authenticate``.

    The authenticator's ``login_url`` stays ``/hub/login``, this handler: were it Cove's page, JupyterHub's own
    handler would append a second ``next`` to it, and would send someone coming back from Cove straight there
    again, as it never reads the cookie."""

    async def get(self) -> None:
        settings: Settings = self.authenticator.settings
        user = self.current_user
        if user is None and (self.get_cookie(sessions.COOKIE) or not settings.login):
            user = await self.login_user()  # an anonymous visit is not a failed login: it goes to Cove's page
        if user is not None:
            self.redirect(self.get_next_url(user), permanent=False)
            return
        if self.get_argument(RETURNED, ""):
            raise web.HTTPError(
                403,
                "Cove's login did not reach the hub: its session cookie is not sent here or not signed with the "
                "studio's key. Serve the studio and the hub on one host (any port), or set COVE_SESSION_DOMAIN to "
                "their common domain, and give the hub the studio's COVE_SECRET_KEY.",
            )
        _ = self.xsrf_token  # sets the _xsrf cookie, as the stock login page does, so a client may POST a password
        back: dict[str, str] = {RETURNED: "1"}
        if self.get_argument("next", ""):
            back["next"] = self.get_argument("next")
        here = f"{self.request.protocol}://{self.request.host}{self.request.path}"  # as the browser reached the hub
        self.redirect(sessions.login_url(settings, url_concat(here, back)))


class CoveLogoutHandler(LogoutHandler):
    """``/hub/logout`` logs out of the hub, then (login on) of Cove, so the next visit does not sign straight in."""

    async def render_logout_page(self) -> None:
        settings: Settings = self.authenticator.settings
        if settings.login:
            self.redirect(f"{settings.gateway_url}/auth/logout", permanent=False)
        else:
            await super().render_logout_page()
