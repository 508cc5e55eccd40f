"""``/budgets``: monthly budgets of tokens or money per user and group, with this month's spend; set and deleted by
an admin, enforced by the gateways (402 once spent)."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter, Request
from pydantic import model_validator
from sqlmodel import Field, SQLModel

from studio.api.auth import allowed
from studio.api.prices import micros
from studio.models import CREATE, BudgetPublic
from studio.prices import BudgetScope, BudgetUnit
from studio.services import budgets
from studio.values import Principal

router = APIRouter(prefix="/budgets", tags=["budgets"])
READ, WRITE = allowed("usage:read"), allowed("keys:write")


class BudgetValues(SQLModel):
    """A month's allowance: ``tokens`` or ``money`` (in the studio's currency), and the warning threshold."""

    model_config = CREATE

    tokens: int | None = Field(default=None, ge=1)
    money: Decimal | None = None
    warn_at: int = Field(default=80, ge=1, le=100)

    @model_validator(mode="after")
    def _one(self) -> BudgetValues:
        if (self.tokens is None) == (self.money is None):
            raise ValueError("give tokens or money, not both")
        return self


@router.get("", response_model=list[BudgetPublic])
def list_budgets(request: Request, actor: Principal = READ) -> list[BudgetPublic]:
    """With this month's spend: every budget for an admin, a member's own and their groups'."""
    settings = request.app.state.settings
    return budgets.list_budgets(db=request.app.state.db, actor=actor, currency=settings.currency)


@router.put("/{scope}/{subject}", response_model=BudgetPublic)
def set_budget(
    request: Request, scope: BudgetScope, subject: str, data: BudgetValues, actor: Principal = WRITE
) -> BudgetPublic:
    if data.tokens is not None:
        unit, amount = BudgetUnit.TOKENS, data.tokens
    else:
        unit, amount = BudgetUnit.MONEY, micros(data.money or Decimal(0), "money")
    return budgets.set_budget(
        db=request.app.state.db,
        actor=actor,
        scope=scope,
        subject=subject,
        unit=unit,
        amount=amount,
        warn_at=data.warn_at,
        currency=request.app.state.settings.currency,
    )


@router.delete("/{scope}/{subject}", status_code=204)
def delete_budget(request: Request, scope: BudgetScope, subject: str, actor: Principal = WRITE) -> None:
    budgets.delete_budget(db=request.app.state.db, actor=actor, scope=scope, subject=subject)
