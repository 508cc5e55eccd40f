"""``client.limits``: rate limits on a key, a user, a group or a deployment (requests and tokens per minute,
requests at once)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from studio.models import LimitPublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/limits"


class Limits:
    def __init__(self, client: Client) -> None:
        self.client = client

    def set(self, scope: str, subject: str, **values: Any) -> LimitPublic:
        """Limit ``scope`` (key, user, group, deployment) ``subject``: ``rpm``, ``tpm``, ``concurrency``; those
        not given keep their value, None removes one."""
        limit: LimitPublic = self.client.call(LimitPublic, "PUT", f"{PATH}/{scope}/{subject}", body=values)
        return limit

    def list(self) -> Iterator[LimitPublic]:
        return self.client.pages(LimitPublic, PATH)

    def delete(self, scope: str, subject: str) -> LimitPublic:
        gone: LimitPublic = self.client.call(LimitPublic, "DELETE", f"{PATH}/{scope}/{subject}")
        return gone
