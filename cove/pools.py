"""``client.pools``: capacity pools, each with what holds it and what is free."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from studio.models import PoolUsagePublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/pools"


class Pools:
    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self, **filters: Any) -> Iterator[PoolUsagePublic]:
        """Every pool by name (``.pool``), its holders (``.held``) and free capacity (``.free.summary`` in words);
        filtered by cluster or purpose."""
        return self.client.pages(PoolUsagePublic, PATH, **filters)

    def get(self, name: str) -> PoolUsagePublic:
        found: PoolUsagePublic = self.client.call(PoolUsagePublic, "GET", f"{PATH}/{name}")
        return found
