"""``/keys``: API keys and personal access tokens (a key with ``scopes``) — create (the secret is in this answer
only), list, revoke; ``/whoami``: who a token acts as; ``/login``: a name and password exchanged for a token (what
``cove login URL --user NAME`` calls: the only route without a bearer token)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from studio import access
from studio.api.auth import Caller, allowed, caller
from studio.api.paging import Page, Window, page, window
from studio.db import utcnow
from studio.errors import Forbidden, Unauthorized
from studio.models import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from studio.names import MAX_NAME, Name
from studio.services import keys, users
from studio.values import Principal, Role

router = APIRouter(tags=["keys"])
READ, WRITE = allowed("keys:read"), allowed("keys:write")


class Me(BaseModel):
    name: str
    role: Role
    groups: list[str]
    token: str  # the token's name ("local": the CLI in process; "NAME's hub token": a notebook)
    scopes: list[str] | None  # None: everything the person may do


@router.get("/whoami", response_model=Me)
def whoami(who: Annotated[Caller, Depends(caller)]) -> Me:
    p = who.principal
    scopes = sorted(who.scopes) if who.scopes is not None else None
    return Me(name=p.name, role=p.role, groups=sorted(p.groups), token=who.token, scopes=scopes)


@router.get("/keys", response_model=Page[ApiKeyPublic])
def list_keys(request: Request, at: Annotated[Window, Depends(window)], actor: Principal = READ) -> Page[ApiKeyPublic]:
    """The caller's keys (an admin: everyone's), by name."""
    return page(keys.list_keys(db=request.app.state.db, actor=actor), at)


@router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_key(
    request: Request, response: Response, data: ApiKeyCreate, who: Annotated[Caller, Depends(caller)]
) -> ApiKeyCreated:
    """A new key of the caller's. With ``scopes`` it is also a personal access token for this API. Its secret
    (``key``) is in this answer and nowhere else. A token makes tokens with at most its own scopes."""
    actor = who.require("keys:write")
    if who.scopes is not None:
        beyond = sorted(s for s in data.scopes or [] if not access.grants(who.scopes, s))
        if beyond:
            raise Forbidden(
                f"token {who.token!r} may not make a token with more than its own scopes: {', '.join(beyond)}",
                hint="make it with fewer scopes, or from the studio or with a token that has them",
            )
    created = keys.create_key(db=request.app.state.db, actor=actor, data=data)
    response.headers["Location"] = f"{request.url.path}/{created.name}"
    return created


@router.delete("/keys/{name}", response_model=ApiKeyPublic)
def revoke_key(request: Request, name: str, actor: Principal = WRITE) -> ApiKeyPublic:
    """Revoke: requests with it are refused from now on (the gateway within a second, streams included)."""
    return keys.revoke_key(db=request.app.state.db, actor=actor, name=name)


class PasswordLogin(BaseModel):
    """A person's name and password, for a personal access token with every scope (``*``) that expires."""

    model_config = ConfigDict(extra="forbid")
    name: str
    password: str = Field(repr=False)
    token_name: Name | None = None  # default: cli-NAME-RANDOM
    expires_days: int = Field(default=30, ge=1, le=366)


def token_name(user: str, host: str = "") -> str:
    """``cli-USER-HOST-RANDOM`` as a valid key name (lowercase, '-', at most 53 characters), so each login on each
    machine has its own token, revocable alone."""
    clean = "-".join(p for p in "".join(c if c.isalnum() else "-" for c in f"{user}-{host}".lower()).split("-") if p)
    suffix = secrets.token_hex(3)
    return f"cli-{clean[: MAX_NAME - len(suffix) - 5].strip('-')}-{suffix}"


NO_PASSWORD_HINT = (
    "try again; if you sign in through the notebook hub or an identity provider (no Cove password), create a token "
    "in the studio and log in with `cove login URL --token TOKEN`"
)


@router.post("/login", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def password_login(request: Request, data: PasswordLogin) -> ApiKeyCreated:
    """Exchange a name and password for a new personal access token of theirs (scopes ``*``, expiring after
    ``expires_days``). 401 with the login page's message on a wrong name or password; a person without a password
    is told the same (so names cannot be probed) with a hint to log in with a token instead."""
    db = request.app.state.db
    try:
        who = users.authenticate(db=db, name=data.name, password=data.password)
    except Unauthorized as exc:
        if exc.message.startswith("wrong user name or password"):
            raise Unauthorized(exc.message, hint=NO_PASSWORD_HINT) from exc
        raise
    created = ApiKeyCreate(
        name=data.token_name or token_name(who.name),
        scopes=["*"],
        expires_at=utcnow() + timedelta(days=data.expires_days),
    )
    return keys.create_key(db=db, actor=who, data=created)
