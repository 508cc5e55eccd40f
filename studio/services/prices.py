"""Prices per deployment, and the bills made from usage rows: totals by user, group, deployment or key, and a
monthly statement per user or group.

A request's cost is computed by the gateway from the price it holds when it serves the request and stored on its
usage row (``UsageRecord.cost_micros``): a price changed later applies from then on and never rewrites a bill. Every
report here sums those stored costs, so totals agree with the rows to the micro.

A row counts for its key's owner and for each group the owner is in now (a user in two groups counts in both).
Requests that ended in an error (status >= 400, other than a client's cancel) are not billed: their tokens and cost
are left out, as in ``services.usage``.

Instance time (``services.uptime``: replica-seconds × the hourly price in force while they ran) is billed to the
deployment's group, or to its owner when it is shared with none; it is added to the cost of lines by deployment,
user and group, and is a line of its own on statements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import col, func, select

from studio import access
from studio.db import Database, utcnow
from studio.errors import Forbidden, InvalidSpec, NotFound
from studio.models import (
    ApiKey,
    Deployment,
    InstanceLine,
    Pool,
    Price,
    PricePublic,
    Statement,
    UsageLine,
    UsageRecord,
    User,
)
from studio.prices import MoneyError, parse_month
from studio.prices import Price as PriceValue
from studio.services import uptime
from studio.services.usage import CANCELLED
from studio.values import Principal

By = Literal["user", "group", "deployment", "key"]
BY: tuple[By, ...] = ("user", "group", "deployment", "key")
FIELDS = ("input_per_m", "output_per_m", "hourly")


def _public(row: Price, *, currency: str, gpu: str | None) -> PricePublic:
    return PricePublic.model_validate(row, update={"currency": currency, "gpu": gpu or None})


def _gpu_of(session: sa.orm.Session, deployment: str) -> str | None:
    found = session.execute(
        sa.select(col(Pool.gpu_model))
        .join(Deployment, col(Deployment.pool_id) == col(Pool.id))
        .where(col(Deployment.name) == deployment)
    ).first()
    return found[0] if found and found[0] else None


def set_price(
    *,
    db: Database,
    actor: Principal,
    deployment: str,
    currency: str = "USD",
    hourly_gpu: dict[str, int] | None = None,
    **values: int,
) -> PricePublic:
    """An admin prices ``deployment`` (micros: ``input_per_m``, ``output_per_m``, ``hourly``, and ``hourly_gpu``,
    per replica-hour on a GPU type, merged into those set before; 0 removes a type's); fields not given keep their
    value. Applies to requests the gateways serve from their next refresh on, and to instance time from the
    controller's next pass; past usage keeps its cost."""
    access.check_admin(actor, doing="set prices")
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise InvalidSpec(f"unknown price fields: {', '.join(sorted(unknown))}", hint=f"give {', '.join(FIELDS)}")
    if any(v < 0 for v in [*values.values(), *(hourly_gpu or {}).values()]):
        raise InvalidSpec("a price cannot be negative", hint="give 0 for free")
    hourly_gpu = {gpu.strip(): v for gpu, v in (hourly_gpu or {}).items()}
    if "" in hourly_gpu:
        raise InvalidSpec("an hourly price per GPU type needs the type", hint="name it as pools do, e.g. H100")
    with db.session() as session:
        if session.exec(select(Deployment.id).where(Deployment.name == deployment)).first() is None:
            raise NotFound(f"no deployment named {deployment!r}", hint="see `cove deploy list`")
        row = session.exec(select(Price).where(Price.deployment == deployment)).first()
        if row is None:
            row = Price.model_validate({"deployment": deployment, "set_by": actor.name, **values})
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.set_by, row.updated_at = actor.name, utcnow()
        if hourly_gpu:
            merged = {**(row.hourly_gpu or {}), **hourly_gpu}
            row.hourly_gpu = {gpu: v for gpu, v in sorted(merged.items()) if v > 0}
        session.add(row)
        session.commit()
        session.refresh(row)
        return _public(row, currency=currency, gpu=_gpu_of(session, deployment))


def list_prices(*, db: Database, currency: str = "USD") -> list[PricePublic]:
    """Every price (anyone may read them: a model square shows them to every member)."""
    with db.session() as session:
        rows = session.exec(select(Price).order_by(col(Price.deployment))).all()
        return [_public(r, currency=currency, gpu=_gpu_of(session, r.deployment)) for r in rows]


def delete_price(*, db: Database, actor: Principal, deployment: str) -> None:
    access.check_admin(actor, doing="delete prices")
    with db.session() as session:
        row = session.exec(select(Price).where(Price.deployment == deployment)).first()
        if row is None:
            raise NotFound(f"no price on deployment {deployment!r}", hint="see `cove price list`")
        session.delete(row)
        session.commit()


def price_book(*, db: Database) -> dict[str, PriceValue]:
    """Deployment → price, as the gateway meters with them (a deployment without one is free)."""
    with db.session() as session:
        return {r.deployment: PriceValue(r.input_per_m, r.output_per_m, r.hourly) for r in session.exec(select(Price))}


# ------------------------------------------------------------------------------------------------ reports


def _billed() -> sa.ColumnElement[bool]:
    status = col(UsageRecord.status_code)
    return sa.or_(status < 400, status == CANCELLED)


def _sums(
    session: sa.orm.Session,
    group_by: Iterable[Any],
    since: datetime | None,
    until: datetime | None,
) -> list[Any]:
    columns = list(group_by)
    query = (
        sa.select(
            *columns,
            func.count(),
            func.sum(col(UsageRecord.prompt_tokens)),
            func.sum(col(UsageRecord.completion_tokens)),
            func.sum(col(UsageRecord.cost_micros)),
        )
        .select_from(UsageRecord)
        .join(ApiKey, col(UsageRecord.api_key_id) == ApiKey.id, isouter=True)
        .where(_billed())
        .group_by(*columns)
    )
    if since is not None:
        query = query.where(col(UsageRecord.created_at) >= since)
    if until is not None:
        query = query.where(col(UsageRecord.created_at) < until)
    return list(session.execute(query))


def _groups_of(session: sa.orm.Session) -> dict[str, list[str]]:
    return {name: list(groups or []) for name, groups in session.execute(sa.select(col(User.name), col(User.groups)))}


def usage_by(
    *,
    db: Database,
    actor: Principal,
    by: By,
    since: datetime | None = None,
    until: datetime | None = None,
    currency: str = "USD",
) -> list[UsageLine]:
    """Billed requests, tokens and cost summed per ``by`` from ``since`` to before ``until``, by name. An admin sees
    everyone's; a member only their own use (by user: their line; by group: their groups' lines, which include their
    fellow members' use; by deployment or key: their own keys' requests)."""
    if by not in BY:
        raise InvalidSpec(f"cannot sum usage by {by!r}", hint=f"give one of {', '.join(BY)}")
    owner = col(ApiKey.owner)
    column = {"user": owner, "group": owner, "deployment": col(UsageRecord.deployment), "key": col(ApiKey.name)}[by]
    instances: dict[str | None, list[float]] = defaultdict(lambda: [0.0, 0])
    if by != "key":
        for run in uptime.runs(db=db, since=since, until=until, now=utcnow()):
            mine = run.payer == actor.name if run.payer_scope == "user" else run.payer in actor.groups
            if not (actor.is_admin or mine):
                continue
            if by == "deployment":
                name: str | None = run.deployment
            elif by == run.payer_scope:
                name = run.payer
            else:
                continue
            instances[name][0] += run.replica_seconds
            instances[name][1] += run.cost
    with db.session() as session:
        if by == "deployment" or by == "key":
            rows = _sums(session, [column, owner], since, until)
            totals: dict[str | None, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
            for name, who, n, p, c, cost in rows:
                if actor.is_admin or who == actor.name:
                    _add(totals[name], n, p, c, cost)
        else:
            rows = _sums(session, [owner], since, until)
            totals = defaultdict(lambda: [0, 0, 0, 0])
            groups = _groups_of(session) if by == "group" else {}
            for who, n, p, c, cost in rows:
                names = groups.get(str(who), []) if by == "group" else [who]
                for name in names:
                    visible = actor.is_admin or (name in actor.groups if by == "group" else name == actor.name)
                    if visible:
                        _add(totals[name], n, p, c, cost)
    for name in instances:  # a line of its own for instance time alone
        totals.setdefault(name, [0, 0, 0, 0])
    return [
        UsageLine(
            by=by,
            name=name,
            requests=v[0],
            prompt_tokens=v[1],
            completion_tokens=v[2],
            cost_micros=v[3] + int(instances[name][1]) if name in instances else v[3],
            currency=currency,
            instance_seconds=instances[name][0] if name in instances else 0.0,
            instance_micros=int(instances[name][1]) if name in instances else 0,
        )
        for name, v in sorted(totals.items(), key=lambda item: (item[0] is None, item[0] or ""))
    ]


def _add(total: list[int], n: int, p: int | None, c: int | None, cost: int | None) -> None:
    total[0] += int(n)
    total[1] += int(p or 0)
    total[2] += int(c or 0)
    total[3] += int(cost or 0)


def statement(
    *, db: Database, actor: Principal, scope: Literal["user", "group"], subject: str, month: str, currency: str = "USD"
) -> Statement:
    """``subject``'s bill for ``month`` (YYYY-MM): a line per deployment, and the totals (the lines' sums). A member
    may read their own and their groups'; an admin everyone's."""
    if scope not in ("user", "group"):
        raise InvalidSpec(f"statements are per user or group, not {scope!r}", hint="give user or group")
    mine = subject == actor.name if scope == "user" else subject in actor.groups
    if not (actor.is_admin or mine):
        raise Forbidden(f"the statement of {scope} {subject!r} is not yours", hint="ask an admin")
    try:
        start, end = parse_month(month)
    except MoneyError as exc:
        raise InvalidSpec(str(exc), hint="e.g. 2026-11") from exc
    with db.session() as session:
        if scope == "user":
            members = [subject]
        else:
            members = [u for u, groups in _groups_of(session).items() if subject in groups]
        rows = _sums(session, [col(UsageRecord.deployment), col(ApiKey.owner)], start, end)
    lines: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for deployment, who, n, p, c, cost in rows:
        if who in members:
            _add(lines[str(deployment)], n, p, c, cost)
    shown = [
        UsageLine(
            by="deployment",
            name=d,
            requests=v[0],
            prompt_tokens=v[1],
            completion_tokens=v[2],
            cost_micros=v[3],
            currency=currency,
        )
        for d, v in sorted(lines.items())
    ]
    instances = [
        InstanceLine(
            deployment=run.deployment,
            gpu=run.gpu,
            replica_seconds=run.replica_seconds,
            hourly_micros=run.hourly,
            cost_micros=run.cost,
            currency=currency,
        )
        for run in uptime.runs(db=db, since=start, until=end, now=utcnow())
        if (run.payer_scope, run.payer) == (scope, subject)
    ]
    return Statement(
        scope=scope,
        subject=subject,
        month=f"{start:%Y-%m}",
        currency=currency,
        lines=shown,
        instances=instances,
        requests=sum(x.requests for x in shown),
        prompt_tokens=sum(x.prompt_tokens for x in shown),
        completion_tokens=sum(x.completion_tokens for x in shown),
        cost_micros=sum(x.cost_micros for x in shown) + sum(x.cost_micros for x in instances),
    )
