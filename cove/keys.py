"""``client.keys``: API keys for the gateway and personal access tokens for the API (keys with ``scopes``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from studio.models import ApiKeyCreated, ApiKeyPublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/keys"


class Keys:
    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, name: str, **fields: Any) -> ApiKeyCreated:
        """A new key: ``deployments`` limits what it may call, ``scopes`` (e.g. ``["deployments:write"]``) makes
        it a token for the API, ``expires_at`` ends it. Its secret is ``.key``, in this answer only."""
        created: ApiKeyCreated = self.client.call(ApiKeyCreated, "POST", PATH, body={"name": name, **fields})
        return created

    def list(self) -> Iterator[ApiKeyPublic]:
        return self.client.pages(ApiKeyPublic, PATH)

    def revoke(self, name: str) -> ApiKeyPublic:
        revoked: ApiKeyPublic = self.client.call(ApiKeyPublic, "DELETE", f"{PATH}/{name}")
        return revoked
