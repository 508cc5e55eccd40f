"""``/prices``, ``/usage/by/{by}`` and ``/statements``: prices per deployment (amounts as decimal strings or
numbers, kept as integer micro-units), usage summed with its cost, and a month's statement per user or group."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from sqlmodel import SQLModel

from studio.api.auth import allowed
from studio.db import utcnow
from studio.errors import InvalidSpec
from studio.models import CREATE, PricePublic, Statement, UsageLine
from studio.prices import MoneyError, parse_money
from studio.services import prices
from studio.services.prices import By
from studio.values import Principal

router = APIRouter(tags=["prices"])
READ, WRITE = allowed("usage:read"), allowed("keys:write")


class PriceValues(SQLModel):
    """Per million input and output tokens, and per replica-hour; in the studio's currency. Left out: kept."""

    model_config = CREATE

    input_per_m: Decimal | None = None
    output_per_m: Decimal | None = None
    hourly: Decimal | None = None
    hourly_gpu: dict[str, Decimal] | None = None  # per replica-hour on a GPU type (overrides hourly); 0 removes one


def micros(value: Decimal | str, what: str) -> int:
    try:
        return parse_money(value)
    except MoneyError as exc:
        raise InvalidSpec(f"{what}: {exc}", hint="e.g. 0.15") from exc


@router.get("/prices", response_model=list[PricePublic])
def list_prices(request: Request, actor: Principal = READ) -> list[PricePublic]:
    return prices.list_prices(db=request.app.state.db, currency=request.app.state.settings.currency)


@router.put("/prices/{deployment}", response_model=PricePublic)
def set_price(request: Request, deployment: str, data: PriceValues, actor: Principal = WRITE) -> PricePublic:
    """Price a deployment (an admin). Requests served from the gateways' next refresh on cost this."""
    given = data.model_dump(exclude_unset=True, exclude={"hourly_gpu"})
    values = {k: micros(v, k) for k, v in given.items() if v is not None}
    per_gpu = {gpu: micros(v, f"hourly on {gpu}") for gpu, v in (data.hourly_gpu or {}).items()}
    settings = request.app.state.settings
    return prices.set_price(
        db=request.app.state.db, actor=actor, deployment=deployment, currency=settings.currency,
        hourly_gpu=per_gpu, **values,
    )  # fmt: skip


@router.delete("/prices/{deployment}", status_code=204)
def delete_price(request: Request, deployment: str, actor: Principal = WRITE) -> None:
    prices.delete_price(db=request.app.state.db, actor=actor, deployment=deployment)


@router.get("/usage/by/{by}", response_model=list[UsageLine])
def usage_by(
    request: Request,
    by: By,
    actor: Principal = READ,
    since: Annotated[datetime | None, Query(description="From this time on (ISO 8601; default: this month).")] = None,
    until: Annotated[datetime | None, Query(description="Before this time (ISO 8601; default: now).")] = None,
) -> list[UsageLine]:
    """Billed requests, tokens and cost per user, group, deployment or key: everyone's for an admin, a member's own."""
    since = since or utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return prices.usage_by(
        db=request.app.state.db,
        actor=actor,
        by=by,
        since=since,
        until=until,
        currency=request.app.state.settings.currency,
    )


@router.get("/statements/{scope}/{subject}", response_model=Statement)
def statement(
    request: Request,
    scope: Literal["user", "group"],
    subject: str,
    actor: Principal = READ,
    month: Annotated[str | None, Query(description="YYYY-MM (default: this month).")] = None,
) -> Statement:
    """A month's bill: a line per deployment and the totals. A member reads their own and their groups'."""
    return prices.statement(
        db=request.app.state.db,
        actor=actor,
        scope=scope,
        subject=subject,
        month=month or f"{utcnow():%Y-%m}",
        currency=request.app.state.settings.currency,
    )
