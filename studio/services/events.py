"""Events: what happened to an object, in words a user reads (kept after the object is deleted)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, delete, select

from studio.db import Database
from studio.models import Event, EventPublic
from studio.values import Principal

KEEP_PER_OBJECT = 200


@dataclass(frozen=True)
class NewEvent:
    reason: str
    message: str
    type: str = "Normal"  # Normal | Warning


def add_events(session: Session, *, kind: str, name: str, events: list[NewEvent], actor: str | None = None) -> None:
    """Add events inside the caller's transaction (services compose through this). ``actor``: the person who did
    it (the audit trail), None for what Cove did itself."""
    for event in events:
        session.add(
            Event(kind=kind, name=name, type=event.type, reason=event.reason, message=event.message, actor=actor)
        )


def record_events(*, db: Database, kind: str, name: str, events: list[NewEvent], actor: str | None = None) -> None:
    """Add events in a transaction of their own (for what happened outside any other change)."""
    with db.session() as session:
        add_events(session, kind=kind, name=name, events=events, actor=actor)
        session.commit()


def audit_trail(*, db: Database, actor: Principal, user: str | None = None, limit: int = 200) -> list[EventPublic]:
    """What people did, newest first: admins see everyone's (or ``user``'s), a member their own."""
    if not actor.is_admin:
        user = actor.name
    with db.session() as session:
        query = select(Event).where(col(Event.actor).is_not(None))
        if user:
            query = query.where(Event.actor == user)
        rows = session.exec(query.order_by(col(Event.id).desc()).limit(limit)).all()
        return [EventPublic.model_validate(row) for row in rows]


def list_events(
    *,
    db: Database,
    kind: str | None = None,
    name: str | None = None,
    names: Sequence[str] | None = None,
    limit: int = 50,
) -> list[EventPublic]:
    """Newest first; of one object (``name``) or of several (``names``)."""
    with db.session() as session:
        query = select(Event)
        if kind:
            query = query.where(Event.kind == kind)
        if name:
            query = query.where(Event.name == name)
        if names is not None:
            query = query.where(col(Event.name).in_(names))
        rows = session.exec(query.order_by(col(Event.id).desc()).limit(limit)).all()
        return [EventPublic.model_validate(row) for row in rows]


def prune_events(*, db: Database, kind: str, name: str, keep: int = KEEP_PER_OBJECT) -> int:
    with db.session() as session:
        ids = session.exec(
            select(Event.id)
            .where(Event.kind == kind, Event.name == name, col(Event.actor).is_(None))  # the audit trail stays
            .order_by(col(Event.id).desc())
            .offset(keep)
        ).all()
        if ids:
            session.exec(delete(Event).where(col(Event.id).in_(ids)))
            session.commit()
        return len(ids)
