"""``client.budgets``: monthly budgets of tokens or money per user and group, with this month's spend."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from studio.models import BudgetPublic

if TYPE_CHECKING:
    from cove.client import Client

PATH = "/budgets"


class Budgets:
    def __init__(self, client: Client) -> None:
        self.client = client

    def set(
        self,
        scope: str,
        subject: str,
        *,
        tokens: int | None = None,
        money: str | Decimal | None = None,
        warn_at: int = 80,
    ) -> BudgetPublic:
        """Give ``scope`` (user, group) ``subject`` a monthly budget of ``tokens`` or ``money`` (a decimal string in
        the studio's currency), warning at ``warn_at`` percent (an admin)."""
        body: dict[str, Any] = {"warn_at": warn_at}
        if tokens is not None:
            body["tokens"] = tokens
        if money is not None:
            body["money"] = str(money)
        budget: BudgetPublic = self.client.call(BudgetPublic, "PUT", f"{PATH}/{scope}/{subject}", body=body)
        return budget

    def list(self) -> list[BudgetPublic]:
        found: list[BudgetPublic] = self.client.call(list[BudgetPublic], "GET", PATH)
        return found

    def delete(self, scope: str, subject: str) -> None:
        self.client.call(None, "DELETE", f"{PATH}/{scope}/{subject}")
