"""``/events``: what happened, newest first — the audit trail (what people did; ``?actor=``), or the events of
objects (``?kind=deployment&name=chat``), which include what Cove did itself.

An admin reads every event. A member reads what they did, and the events of one object they may see: give both
``kind`` and ``name``. Kinds: deployment, model, image, cluster, key, user.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from studio import access
from studio.api.auth import allowed
from studio.api.paging import Page, Window, page, window
from studio.db import Database
from studio.errors import InvalidSpec
from studio.models import EventPublic
from studio.services import deployments, events, keys
from studio.values import Principal

router = APIRouter(prefix="/events", tags=["events"])
READ = allowed("events:read")
NEWEST = 10_000  # the most events one listing reads; older ones stay in the database
SHARED = ("model", "image", "cluster", "pool")  # the catalog and the infrastructure: everyone reads them


def _check_visible(db: Database, actor: Principal, kind: str | None, name: str | None) -> None:
    """Forbidden / NotFound unless a member may see this object (an admin sees everything)."""
    if actor.is_admin:
        return
    if not kind or not name:
        raise InvalidSpec(
            "a member reads one object's events at a time: give both kind and name",
            hint="or leave both out for what you did yourself",
        )
    if kind == deployments.KIND:
        deployments.get_deployment(db=db, actor=actor, name=name)
    elif kind == keys.KIND:
        if name not in {k.name for k in keys.list_keys(db=db, actor=actor)}:
            access.check_admin(actor, doing="read the events of other people's keys")
    elif kind == "user":
        if name != actor.name:
            access.check_admin(actor, doing="read the events of other users")
    elif kind not in SHARED:
        access.check_admin(actor, doing=f"read the events of a {kind}")


@router.get("", response_model=Page[EventPublic])
def list_events(
    request: Request,
    at: Annotated[Window, Depends(window)],
    actor: Principal = READ,
    kind: Annotated[str | None, Query(description="The kind of object: deployment, model, image, …")] = None,
    name: Annotated[str | None, Query(description="The object's name (an image's is NAME:VERSION).")] = None,
    by: Annotated[str | None, Query(alias="actor", description="Only what this person did.")] = None,
) -> Page[EventPublic]:
    """With ``kind`` or ``name``: those objects' events; otherwise the audit trail (what people did). ``actor``
    narrows either to what one person did (a member's audit trail is their own)."""
    db = request.app.state.db
    if kind is None and name is None:
        return page(events.audit_trail(db=db, actor=actor, user=by, limit=NEWEST), at)
    _check_visible(db, actor, kind, name)
    found = events.list_events(db=db, kind=kind, name=name, limit=NEWEST)
    return page([e for e in found if by is None or e.actor == by], at)
