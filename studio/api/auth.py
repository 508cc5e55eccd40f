"""Who calls the API, and what they may do.

A request carries ``Authorization: Bearer TOKEN``:
- a personal access token (a Cove key with API scopes: ``studio.access.SCOPES``), whose owner acts, narrowed to
  its scopes; a key without scopes is for the gateway only;
- inside a hub notebook, the hub's token for the notebook's user (``JUPYTERHUB_API_TOKEN``): the hub says whose it
  is, and they act with everything they may do, as in the studio.
The CLI on the control plane's machine calls the API in process as its actor, without a token (``Caller.trusted``).
Every route then calls the services with the caller's principal, so owners, roles and groups apply as everywhere.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from studio import access
from studio.db import Database, utcnow
from studio.errors import BackendUnavailable, Forbidden, Unauthorized
from studio.services import keys, users
from studio.services.keys import KEY_PREFIX
from studio.settings import Settings
from studio.values import Principal

HUB_CACHE_S = 60.0  # a hub token's owner is asked again after this long
SCHEME_HINT = (
    "log in with `cove login URL`, or send `Authorization: Bearer TOKEN` with a token from `cove token create`"
)


@dataclass(frozen=True)
class Caller:
    """Who calls: the acting principal, the token's name (for messages), and its scopes (None: all they may do)."""

    principal: Principal
    token: str
    scopes: frozenset[str] | None = None

    @classmethod
    def trusted(cls, principal: Principal) -> Caller:
        return cls(principal, token="local")

    def require(self, needed: str) -> Principal:
        """The principal, once the token holds ``needed`` (Forbidden naming the scope otherwise)."""
        if self.scopes is not None:
            access.check_scope(self.scopes, needed, token=self.token)
        return self.principal


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not value.strip():
        raise Unauthorized("this request carries no token", hint=SCHEME_HINT)
    return value.strip()


class HubTokens:
    """Whose a hub token is, asked of the hub's API (``GET /hub/api/user``) and kept for a minute."""

    def __init__(self, hub_api: str, *, timeout: float = 10) -> None:
        self.hub_api, self.timeout = hub_api.rstrip("/"), timeout
        self._known: dict[str, tuple[float, str]] = {}  # sha256 of the token → (when asked, user name)
        self._lock = threading.Lock()

    def owner(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            known = self._known.get(digest)
        if known and time.monotonic() - known[0] < HUB_CACHE_S:
            return known[1]
        request = urllib.request.Request(self.hub_api + "/user", headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                name = str(json.loads(response.read())["name"])
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise Unauthorized("the token is neither a Cove token nor a hub token", hint=SCHEME_HINT) from exc
            raise BackendUnavailable(f"the notebook hub answered {exc.code} when asked whose a token is") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise BackendUnavailable(
                f"the notebook hub at {self.hub_api} does not answer, so a hub token cannot be checked",
                hint="use a Cove token (`cove token create`), or start the hub",
            ) from exc
        with self._lock:
            self._known[digest] = (time.monotonic(), name)
        return name


class Authenticator:
    """Bearer token → Caller; each request is checked afresh (a revoked token or disabled user stops at once)."""

    def __init__(self, *, db: Database, hub: HubTokens | None) -> None:
        self.db, self.hub = db, hub

    def __call__(self, token: str) -> Caller:
        if token.startswith(KEY_PREFIX):
            key = keys.find_key(db=self.db, key_hash=keys.hash_key(token))
            if key is None:
                raise Unauthorized("this token is unknown or revoked, or its owner is disabled", hint=SCHEME_HINT)
            if key.expired(utcnow()):
                raise Unauthorized(f"token {key.name!r} has expired", hint="create a new one: `cove token create`")
            if key.scopes is None:
                raise Forbidden(
                    f"API key {key.name!r} is for the gateway only: it has no API scopes",
                    hint="create a token with scopes: `cove token create NAME --scope deployments:write`",
                )
            return Caller(users.principal(db=self.db, name=key.owner), token=key.name, scopes=key.scopes)
        if self.hub is None:
            raise Unauthorized("this token is not a Cove token", hint=SCHEME_HINT)
        name = self.hub.owner(token)
        return Caller(users.principal(db=self.db, name=name), token=f"{name}'s hub token")


def authenticator(settings: Settings, db: Database) -> Authenticator:
    return Authenticator(db=db, hub=HubTokens(settings.hub_url + "/hub/api"))


def by_token(check: Authenticator) -> Callable[[Request], Awaitable[Caller]]:
    """A FastAPI dependency: the caller of a request, from its bearer token (checked in a worker thread)."""

    async def caller(request: Request) -> Caller:
        return await run_in_threadpool(check, bearer(request))

    return caller


def trusting(principal: Principal) -> Callable[[Request], Awaitable[Caller]]:
    """Every request is ``principal``'s: the CLI's in-process API on the control plane's machine."""
    who = Caller.trusted(principal)

    async def caller(_request: Request) -> Caller:
        return who

    return caller


BEARER = HTTPBearer(auto_error=False, description="A Cove token (`cove token create`) or, in a notebook, the hub's.")


async def caller(
    request: Request, _token: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None
) -> Caller:
    """Who calls (a route's dependency), by the app's way of telling (``build_api``'s ``identify``)."""
    identify: Callable[[Request], Awaitable[Caller]] = request.app.state.identify
    return await identify(request)


def allowed(needed: str) -> Any:
    """A route's dependency: the caller's principal, once their token holds the scope ``needed``."""

    async def principal(who: Annotated[Caller, Depends(caller)]) -> Principal:
        return who.require(needed)

    return Depends(principal)
