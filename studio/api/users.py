"""``/users`` and ``/groups``: who may log in, as what role, in which groups (admins change them; a member sees and
sets the password of themself only).

A user has no generation, so a user's ETag is a hash of what ``GET`` shows: ``PATCH`` with ``If-Match`` changes
them only if nothing shown changed since (409 naming the current ETag otherwise).
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Request, Response, status
from pydantic import BaseModel, ConfigDict

from studio import access
from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.db import Database
from studio.errors import Conflict, InvalidSpec
from studio.models import GroupPublic, UserCreate, UserPublic
from studio.services import users
from studio.values import Principal, Role

router = APIRouter(tags=["users"])
READ, WRITE = allowed("users:read"), allowed("users:write")


class UserUpdate(BaseModel):
    """What an admin may change on a user; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    groups: list[str] | None = None  # replaces their groups ([]: none)
    disabled: bool | None = None


class Password(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str  # the service says when it is too short


def etag(user: UserPublic) -> str:
    return '"' + hashlib.sha256(user.model_dump_json().encode()).hexdigest()[:20] + '"'


def answered(response: Response, user: UserPublic) -> UserPublic:
    response.headers["ETag"] = etag(user)
    return user


def _visible(db: Database, actor: Principal, name: str) -> UserPublic:
    if name != actor.name:
        access.check_admin(actor, doing="see other users")
    return users.get_user(db=db, name=name)


@router.get("/users", response_model=Page[UserPublic])
def list_users(
    request: Request,
    at: Annotated[Window, Depends(window)],
    actor: Principal = READ,
    role: Role | None = None,
    group: str | None = None,
    disabled: bool | None = None,
) -> Page[UserPublic]:
    """Users by name (an admin sees everyone, a member themself), filtered by role, group and disabled."""
    found = [
        u
        for u in users.list_users(db=request.app.state.db, actor=actor)
        if (role is None or u.role == role)
        and (group is None or group in u.groups)
        and (disabled is None or u.disabled == disabled)
    ]
    return page(found, at)


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
def add_user(request: Request, response: Response, data: UserCreate, actor: Principal = WRITE) -> UserPublic:
    """Add a user (admins). Without a password they cannot log in until one is set."""
    added = users.create_user(db=request.app.state.db, actor=actor, data=data)
    response.headers["Location"] = f"{request.url.path}/{added.name}"
    return answered(response, added)


@router.get("/users/{name}", response_model=UserPublic)
def get_user(request: Request, response: Response, name: str, actor: Principal = READ) -> UserPublic:
    """One user (a member: themself only); the ETag is for If-Match on PATCH."""
    return answered(response, _visible(request.app.state.db, actor, name))


@router.patch("/users/{name}", response_model=UserPublic)
def update_user(
    request: Request,
    response: Response,
    name: str,
    data: Annotated[UserUpdate, Body()],
    actor: Principal = WRITE,
    if_match: Annotated[str | None, Header()] = None,
) -> UserPublic:
    """Change a user's role, groups or whether they may log in (admins). With If-Match, only if the user is as
    that ETag saw them (409 naming the current ETag otherwise)."""
    db = request.app.state.db
    access.check_admin(actor, doing="change users")
    if not data.model_fields_set:
        raise InvalidSpec("nothing to change", hint="give role, groups or disabled")
    if if_match is not None and if_match.strip() != "*":
        # Checked, then written, in two transactions: two admins racing within that instant both win; the check
        # is for the common case of a change made to what someone read minutes ago.
        current = etag(users.get_user(db=db, name=name))
        if if_match.strip().removeprefix("W/") != current:
            raise Conflict(
                f"user {name!r} changed since it was read: its ETag is {current}, not {if_match.strip()}",
                hint="read it again, and make your change to what it is now",
            )
    changed = users.update_user(
        db=db, actor=actor, name=name, role=data.role, groups=data.groups, disabled=data.disabled
    )
    return answered(response, changed)


@router.put("/users/{name}/password", status_code=status.HTTP_204_NO_CONTENT)
def set_password(request: Request, name: str, data: Password, actor: Principal = WRITE) -> None:
    """Set a password: a member their own, an admin anyone's."""
    users.set_password(db=request.app.state.db, actor=actor, name=name, password=data.password)


@router.delete("/users/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove_user(request: Request, name: str, actor: Principal = WRITE) -> None:
    """Remove a user (admins): what they own becomes the caller's, their keys are revoked."""
    users.remove_user(db=request.app.state.db, actor=actor, name=name)


@router.get("/groups", response_model=Page[GroupPublic])
def list_groups(request: Request, at: Annotated[Window, Depends(window)], actor: Principal = READ) -> Page[GroupPublic]:
    """Groups by name with their members, of the users the caller sees (a member: their own groups, and only
    themself in them)."""
    members: dict[str, list[str]] = {}
    for u in users.list_users(db=request.app.state.db, actor=actor):
        for g in u.groups:
            members.setdefault(g, []).append(u.name)
    return page([GroupPublic(name=g, members=members[g]) for g in sorted(members)], at)
