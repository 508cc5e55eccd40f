"""The people tests act as: ``ADMIN`` is the first admin every migrated database has; ``member`` adds another."""

from __future__ import annotations

from studio.db import Database
from studio.models import UserCreate
from studio.services import users
from studio.values import Principal, Role

ADMIN = Principal(name="admin", role=Role.ADMIN)


def member(db: Database, name: str, *groups: str, password: str | None = None) -> Principal:
    """A new member in ``groups`` (made by the admin), as a principal."""
    users.create_user(db=db, actor=ADMIN, data=UserCreate(name=name, groups=list(groups), password=password))
    return Principal(name=name, groups=frozenset(groups))
