"""``client.usage``: requests and tokens per key, deployment and day; a deployment's traffic per minute."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from studio.models import Statement, Traffic, UsageLine, UsageSummary

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/usage"
Minutes = list[Traffic]


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


class Usage:
    def __init__(self, client: Client) -> None:
        self.client = client

    def summary(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        key: str | None = None,
        deployment: str | None = None,
    ) -> Iterator[UsageSummary]:
        """Per key, deployment and day, oldest first, from ``since`` (default: 7 days ago) to before ``until``:
        every key's for an admin, a member's own keys'."""
        filters: dict[str, Any] = {"since": _iso(since), "until": _iso(until), "key": key, "deployment": deployment}
        return self.client.pages(UsageSummary, PATH, **{k: v for k, v in filters.items() if v is not None})

    def traffic(self, deployment: str, *, since: datetime | None = None) -> Minutes:
        """``deployment``'s traffic per minute since ``since`` (default: an hour ago), oldest first."""
        path, params = f"{PATH}/traffic/{deployment}", {"since": _iso(since)}
        found: Minutes = self.client.call(Minutes, "GET", path, params=params)
        return found

    def by(self, by: str, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageLine]:
        """Billed requests, tokens and cost per ``by`` (user, group, deployment, key) from ``since`` (default: the
        month's start) to before ``until``."""
        params = {k: v for k, v in {"since": _iso(since), "until": _iso(until)}.items() if v is not None}
        found: list[UsageLine] = self.client.call(list[UsageLine], "GET", f"{PATH}/by/{by}", params=params)
        return found

    def statement(self, scope: str, subject: str, *, month: str | None = None) -> Statement:
        """``scope`` (user, group) ``subject``'s bill for ``month`` (YYYY-MM; default: this one)."""
        params = {"month": month} if month else {}
        found: Statement = self.client.call(Statement, "GET", f"/statements/{scope}/{subject}", params=params)
        return found
