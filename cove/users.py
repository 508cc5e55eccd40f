"""``client.users`` and ``client.groups``: who may log in, as what role, in which groups."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from studio.models import GroupPublic, UserPublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/users"


class Users:
    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self, **filters: Any) -> Iterator[UserPublic]:
        """Users (an admin sees everyone, a member themself), filtered by role, group or disabled."""
        return self.client.pages(UserPublic, PATH, **filters)

    def get(self, name: str) -> UserPublic:
        found: UserPublic = self.client.call(UserPublic, "GET", f"{PATH}/{name}")
        return found

    def etag(self, name: str) -> str:
        """The user's ETag now, for ``update(…, if_match=…)``."""
        return self.client.request("GET", f"{PATH}/{name}").headers["ETag"]

    def add(self, name: str, **fields: Any) -> UserPublic:
        """Add a user (admins); ``role``, ``groups``, ``password``, ``disabled`` as ``UserCreate``."""
        added: UserPublic = self.client.call(UserPublic, "POST", PATH, body={"name": name, **fields})
        return added

    def update(self, name: str, *, if_match: str | None = None, **changes: Any) -> UserPublic:
        """Change ``role``, ``groups`` or ``disabled`` (admins); with ``if_match`` (an ``etag``), only if nothing
        changed since (``cove.Conflict`` otherwise)."""
        headers = {"If-Match": if_match} if if_match is not None else None
        changed: UserPublic = self.client.call(UserPublic, "PATCH", f"{PATH}/{name}", body=changes, headers=headers)
        return changed

    def set_password(self, name: str, password: str) -> None:
        """A member sets their own, an admin anyone's (at least 8 characters)."""
        self.client.request("PUT", f"{PATH}/{name}/password", body={"password": password})

    def remove(self, name: str) -> None:
        """Remove a user (admins): what they own becomes the caller's, their keys are revoked."""
        self.client.request("DELETE", f"{PATH}/{name}")


class Groups:
    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self) -> Iterator[GroupPublic]:
        """Groups with their members, of the users the caller sees."""
        return self.client.pages(GroupPublic, "/groups")
