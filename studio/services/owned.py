"""Ownership as the services apply it to rows: ``studio.access``'s rules, as a check on one row and as a filter in
SQL (so a member's lists are made by the database, not by reading everyone's rows)."""

from __future__ import annotations

from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import col

from studio import access
from studio.values import Principal


class OwnedRow(Protocol):
    name: str
    owner: str
    group: str | None


def check(actor: Principal, row: OwnedRow, *, kind: str) -> None:
    """Forbidden, naming the owner, unless ``actor`` may see and change ``row``."""
    access.check_owner(actor, kind=kind, name=row.name, owner=row.owner, group=row.group)


def visible(table: Any, actor: Principal) -> sa.ColumnElement[bool]:
    """The rows of ``table`` (with ``owner`` and ``group`` columns) that ``actor`` may see."""
    if actor.is_admin:
        return sa.true()
    mine = col(table.owner) == actor.name
    return sa.or_(mine, col(table.group).in_(sorted(actor.groups))) if actor.groups else mine
