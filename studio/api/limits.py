"""``/limits``: rate limits on keys, users, groups and deployments — list, set (the fields given), delete. Thin over
``services.limits``; the gateway enforces a change within its refresh interval."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlmodel import Field, SQLModel

from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.limits import LimitScope
from studio.models import CREATE, LimitPublic, LimitSet
from studio.services import limits
from studio.values import Principal

router = APIRouter(prefix="/limits", tags=["limits"])
READ, WRITE = allowed("keys:read"), allowed("keys:write")  # limits say who may call the gateway how much


class LimitValues(SQLModel):
    """What to set; a field given as null removes that part of the limit, one left out keeps it."""

    model_config = CREATE

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)


@router.get("", response_model=Page[LimitPublic])
def list_limits(request: Request, at: Annotated[Window, Depends(window)], actor: Principal = READ) -> Page[LimitPublic]:
    """An admin sees every limit; a member those on their keys, themselves, their groups and on deployments."""
    return page(limits.list_limits(db=request.app.state.db, actor=actor), at)


@router.put("/{scope}/{subject}", response_model=LimitPublic)
def set_limit(
    request: Request, scope: LimitScope, subject: str, data: LimitValues, actor: Principal = WRITE
) -> LimitPublic:
    """Limit a key (its owner or an admin), or a user, group or deployment (an admin)."""
    values = data.model_dump(exclude_unset=True)
    return limits.set_limit(db=request.app.state.db, actor=actor, data=LimitSet(scope=scope, subject=subject, **values))


@router.delete("/{scope}/{subject}", response_model=LimitPublic)
def delete_limit(request: Request, scope: LimitScope, subject: str, actor: Principal = WRITE) -> LimitPublic:
    return limits.delete_limit(db=request.app.state.db, actor=actor, scope=scope, subject=subject)
