"""``client.notebooks``: running notebook servers and what they hold (the hub starts and stops them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from studio.models import NotebookPublic

if TYPE_CHECKING:
    from cove.client import Client


class Notebooks:
    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self, **filters: Any) -> Iterator[NotebookPublic]:
        """Running servers (a member's own; an admin's: everyone's), filtered by user or pool."""
        return self.client.pages(NotebookPublic, "/notebooks", **filters)
