"""Logged-in sessions, one for every face: the studio, the playground and the hub read the same cookie.

A person logs in once, at the server's ``/auth/login`` (a password, or the team's OpenID Connect provider); the
server sets ``cove_session``, a value signed with the studio's key (itsdangerous, as Starlette's sessions are) that
names the user and when they logged in. Browsers send a host's cookies to every port of that host, so the studio
UI, the playground and the hub on the same host see it too (on Kubernetes, behind one ingress host, or with
``COVE_SESSION_DOMAIN`` set to the parent domain of theirs). Each face checks the signature and the age, then asks
the database whether the user still exists and is enabled: a removed or disabled user's sessions end at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeTimedSerializer

from studio.db import Database
from studio.errors import Unauthorized
from studio.sealing import studio_key
from studio.services import users
from studio.settings import Settings
from studio.values import Principal

COOKIE = "cove_session"
_SALT = "cove-session"  # a signature for sessions cannot be taken for any other use of the studio's key


def _signer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(studio_key(settings), salt=_SALT)


def issue(settings: Settings, name: str) -> str:
    """The cookie's value for ``name``, logged in now."""
    return str(_signer(settings).dumps({"u": name}))


def user_of(settings: Settings, token: str) -> str | None:
    """The user a cookie's value names, or None when it is forged, altered or older than the session lifetime."""
    try:
        data = _signer(settings).loads(token, max_age=round(settings.session_hours * 3600))
    except BadSignature:  # includes SignatureExpired
        return None
    name = data.get("u") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def principal(settings: Settings, db: Database, cookies: Mapping[str, str]) -> Principal | None:
    """Who a request's cookies are logged in as; None when not logged in (or no longer may be)."""
    token = cookies.get(COOKIE)
    name = user_of(settings, token) if token else None
    if name is None:
        return None
    try:
        return users.principal(db=db, name=name)
    except Unauthorized:  # removed or disabled since: the session is over
        return None


def login_url(settings: Settings, back_to: str) -> str:
    """Where a face sends someone who is not logged in, to come back to ``back_to`` after."""
    return f"{settings.login_base}/auth/login?next={quote(back_to, safe='')}"
