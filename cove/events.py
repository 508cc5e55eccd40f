"""``client.events``: the audit trail (what people did) and the events of objects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from studio.models import EventPublic

if TYPE_CHECKING:
    from cove.client import Client


class Events:
    def __init__(self, client: Client) -> None:
        self.client = client

    def audit(self, *, actor: str | None = None) -> Iterator[EventPublic]:
        """What people did, newest first (an admin: everyone's, or ``actor``'s; a member: their own)."""
        filters: dict[str, Any] = {"actor": actor} if actor else {}
        return self.client.pages(EventPublic, "/events", **filters)

    def of(self, kind: str, name: str) -> Iterator[EventPublic]:
        """What happened to one object (``kind`` deployment, model, image, cluster, key, user), newest first."""
        return self.client.pages(EventPublic, "/events", kind=kind, name=name)
