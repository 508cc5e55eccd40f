"""``/keys``: API keys and personal access tokens (a key with ``scopes``) — create (the secret is in this answer
only), list, revoke; ``/whoami``: who a token acts as."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel

from studio import access
from studio.api.auth import Caller, allowed, caller
from studio.api.paging import Page, Window, page, window
from studio.errors import Forbidden
from studio.models import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from studio.services import keys
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
